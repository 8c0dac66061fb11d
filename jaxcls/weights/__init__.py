"""Pretrained weights from Hugging Face, timm, torchvision, big_vision and jaxcls checkpoints.

    model, variables = jaxcls.weights.load("resnet-50/", model="resnet50")
    logits = model.apply(variables, images_nhwc_float, train=False)

`read` gives the converted tensors together with what the checkpoint implies about the model
(fields such as a ViT's LayerNorm epsilon) and its preprocessing (mean/std, crop ratio); `fit`
places them on a model, replacing the head when the number of classes differs, resizing a ViT
position embedding to a new resolution, and otherwise failing with every missing, unexpected
and mis-shaped key listed. `python -m jaxcls.weights convert` writes a jaxcls checkpoint.
"""

import dataclasses
import json
import os
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcls import checkpoint, models, sharding
from jaxcls.models import vit
from jaxcls.weights import files, layouts

META_FILE = "jaxcls_weights.json"  # beside the variables of a converted checkpoint
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
INCEPTION = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # inputs in [-1, 1]
# Top-level classifiers, replaced together for new classes (a distilled DeiT has two).
HEADS = ("head", "head_dist")


def heads(params: dict) -> dict:
    """The classifier heads of a model's params ({"head": {...}, ...}): what `fit`'s new_head
    returns."""
    return {name: params[name] for name in HEADS if name in params}


@dataclasses.dataclass
class Checkpoint:
    """Pretrained tensors in jaxcls layout ('params/block0/attn/query/kernel': array)."""

    path: str
    layout: str
    tensors: dict[str, np.ndarray]
    model_kwargs: dict  # model fields the checkpoint fixes (pool, layer_norm_eps, ...)
    preprocessing: dict  # mean, std (in [0, 1] units), crop_frac; some: interpolation, image_size
    unexpected: list[str]  # source keys that map to nothing

    @property
    def num_classes(self) -> int | None:
        head = self.tensors.get("params/head/kernel")
        return None if head is None else int(head.shape[-1])


def _default_preprocessing(family: str, layout: str) -> dict:
    if family == "vit" and layout != "torchvision":  # AugReg / google ViTs take [-1, 1]
        return {**INCEPTION, "crop_frac": {"hf": 1.0, "timm": 0.9}.get(layout, 0.875)}
    if family == "inception":  # Google's ported weights: [-1, 1] (torchvision's transform_input)
        return {**INCEPTION, "crop_frac": 0.875}
    return {**IMAGENET, "crop_frac": 0.875}


def _hf_metadata(folder: str, family: str) -> tuple[dict, dict]:
    """(model kwargs, preprocessing) from a Hugging Face folder's json files."""
    config = files.read_json(folder, "config.json")
    kwargs, pre = {}, {}
    if family in ("vit", "deit") and config:
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{folder}: hidden_act={config['hidden_act']!r}; jaxcls ViTs use "
                             f"exact GELU")
        kwargs["layer_norm_eps"] = config.get("layer_norm_eps", 1e-12)
    proc = files.read_json(folder, "preprocessor_config.json")
    if "image_mean" in proc:
        pre["mean"], pre["std"] = tuple(proc["image_mean"]), tuple(proc["image_std"])
    if "crop_pct" in proc:
        pre["crop_frac"] = float(proc["crop_pct"])
    elif proc and not proc.get("do_center_crop", False):
        pre["crop_frac"] = 1.0
    return kwargs, pre


def _read_jaxcls(path: str, model: str) -> Checkpoint:
    """A checkpoint from `python -m jaxcls.weights convert` or a training run's step folder."""
    if os.path.exists(os.path.join(path, META_FILE)):
        with open(os.path.join(path, META_FILE)) as f:
            meta = json.load(f)
        variables = checkpoint.load_tree(os.path.join(path, "variables"))
        kwargs, pre = meta["model_kwargs"], meta["preprocessing"]
        saved_model = meta["model"]
    else:  # WORKDIR/checkpoints/STEP of a training run
        state = checkpoint.load_state(path)
        variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
        config_path = os.path.join(path, "..", "..", "config.json")
        with open(config_path) as f:
            run_config = json.load(f)
        kwargs = run_config.get("model_kwargs", {})
        pre = {k: run_config[k] for k in ("mean", "std", "crop_frac")}
        saved_model = run_config["model"]
    if saved_model != model:
        raise ValueError(f"{path} holds {saved_model!r} weights, not {model!r}")
    tensors = {sharding.path_str(key): np.asarray(v)
               for key, v in jax.tree_util.tree_flatten_with_path(variables)[0]}
    return Checkpoint(path, "jaxcls", tensors, kwargs, pre, [])


def _is_jaxcls(path: str) -> bool:
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, META_FILE))
                                    or os.path.isdir(os.path.join(path, "state")))


def read(path: str, model: str, layout: str = "auto") -> Checkpoint:
    """The weights at `path` (file or folder) converted for registered model `model`.

    layout: auto | hf | timm | torchvision | big_vision | lukemelas | openai | jaxcls. A CLIP
    checkpoint (openai or hf) gives a ViT its image tower (models `clip_vit_*`)."""
    family = models.family(model)
    if layout == "jaxcls" or (layout == "auto" and _is_jaxcls(path)):
        return _read_jaxcls(path, model)
    if layout not in ("auto", *layouts.LAYOUTS):
        raise ValueError(f"weights layout {layout!r}: use auto, jaxcls or one of "
                         f"{layouts.LAYOUTS}")
    source = files.read_tensors(path)
    if layout == "auto":
        layout = layouts.detect(list(source))
    if family == "vit" and layouts.is_clip(list(source)):
        from jaxcls.clip import weights as clip_weights  # jaxcls.clip imports this package

        return clip_weights.image_tower_checkpoint(path, layout, source)
    tensors, unexpected = layouts.convert(source, family, layout)
    kwargs, pre = {}, _default_preprocessing(family, layout)
    if family == "vit":
        if layout == "hf":
            kwargs["layer_norm_eps"] = 1e-12  # Hugging Face's ViT default
        if layout == "big_vision":
            kwargs["gelu_approximate"] = True  # flax's nn.gelu default, which big_vision uses
        if "params/cls" not in tensors:
            kwargs["pool"] = "gap"
        if "params/pre_logits/kernel" in tensors:
            kwargs["representation_size"] = int(tensors["params/pre_logits/kernel"].shape[-1])
    if family == "vgg":  # timm's VGGs end in a conv pre_logits, torchvision's in Linears
        kwargs["conv_head"] = "params/pre_logits/fc1/kernel" in tensors
    conventions = getattr(models.FAMILIES[family], "checkpoint_conventions", None)
    if conventions is not None:  # what the family's checkpoints imply in this layout
        family_kwargs, family_pre = conventions(model, layout)
        kwargs.update(family_kwargs)
        pre.update(family_pre)
    if layout == "hf" and os.path.isdir(path):
        hf_kwargs, hf_pre = _hf_metadata(path, family)
        kwargs.update(hf_kwargs)
        pre.update(hf_pre)
    return Checkpoint(path, layout, tensors, kwargs, pre, unexpected)


def _listing(title: str, keys: list[str]) -> str:
    keys = sorted(keys, key=lambda k: (not k.startswith("params/"), k))  # params first
    return f"\n  {title} ({len(keys)}): " + ", ".join(keys)


def fit(ckpt: Checkpoint, target: dict, new_head: Callable[[], dict],
        replace_head: bool = False) -> dict:
    """Variables shaped like `target` (the model's variables, or their shapes) holding the
    checkpoint's tensors. The heads (`params/head/...`, and a distilled DeiT's
    `params/head_dist/...`) come from `new_head()` (a fresh initialisation: `heads(params)`)
    when the checkpoint has none or a different number of classes; a ViT position embedding is
    resized to the model's grid. Any other missing, unexpected or
    mis-shaped key raises ValueError listing all of them. `replace_head`: a new head even when
    the class counts match (the same number of different classes)."""
    flat_fresh = {sharding.path_str(key): v
                  for key, v in jax.tree_util.tree_flatten_with_path(target)[0]}
    out, missing, mismatched, replaced = {}, [], [], []
    head_classes = ckpt.num_classes
    for key, target in flat_fresh.items():
        value = ckpt.tensors.get(key)
        is_head = key.split("/")[:2] in [["params", h] for h in HEADS]
        if value is None or (is_head and (replace_head or head_classes != target.shape[-1])):
            (replaced if is_head else missing).append(key)
            continue
        if value.shape != target.shape:
            if value.size == np.prod(target.shape):
                value = value.reshape(target.shape)  # e.g. [D, H*Dh] -> [D, H, Dh]
            elif key == "params/pos_embedding":
                prefix = sum(f"params/{t}" in flat_fresh for t in ("cls", "dist_token"))
                logging.info("resizing the position embedding from %s to %s", value.shape,
                             target.shape)
                value = vit.resize_pos_embedding(value, target.shape[1], prefix)
            else:
                mismatched.append(f"{key} {value.shape} vs model {tuple(target.shape)}")
                continue
        out[key] = value.astype(target.dtype)
    unexpected = ckpt.unexpected + sorted(set(ckpt.tensors) - set(flat_fresh) - set(replaced))
    if missing or unexpected or mismatched:
        raise ValueError(
            f"weights {ckpt.path} ({ckpt.layout} layout) do not fit the model:"
            + (_listing("missing from the checkpoint", missing) if missing else "")
            + (_listing("unexpected in the checkpoint", unexpected) if unexpected else "")
            + (_listing("shape mismatch", mismatched) if mismatched else ""))
    if replaced:
        logging.info("new head %s (checkpoint classes: %s)", replaced, head_classes)
        fresh = new_head()
        for key in replaced:
            _, module, leaf = key.split("/")
            out[key] = np.asarray(fresh[module][leaf])
    return flax.traverse_util.unflatten_dict(out, sep="/")


def _image_size(ckpt: Checkpoint, model) -> int | None:
    """The resolution a ViT checkpoint's position embedding was trained at."""
    posemb = ckpt.tensors.get("params/pos_embedding")
    if posemb is None:
        return None
    grid = int(round(np.sqrt(posemb.shape[1] - len(model.prefix_tokens))))
    return grid * model.patch_size


def build(ckpt: Checkpoint, model: str, num_classes: int | None = None,
          image_size: int | None = None, seed: int = 0, **model_kwargs):
    """(model, variables) from a `read` checkpoint; arguments as `load`."""
    classes = num_classes or ckpt.num_classes
    if classes is None:
        raise ValueError(f"{ckpt.path} has no classifier head: pass num_classes")
    module = models.create(model, classes, **{**ckpt.model_kwargs, **model_kwargs})
    size = image_size or (_image_size(ckpt, module) if isinstance(module, vit.ViT) else None)
    size = size or models.DEFAULT_IMAGE_SIZE[model]
    def init(key):
        return module.init(key, jnp.zeros((1, size, size, 3)))

    abstract = jax.eval_shape(init, jax.random.key(seed))
    variables = fit(ckpt, abstract, lambda: jax.jit(
        lambda k: heads(init(k)["params"]))(jax.random.key(seed)))
    return module, jax.tree.map(jnp.asarray, variables)


def load(path: str, model: str, num_classes: int | None = None, image_size: int | None = None,
         layout: str = "auto", seed: int = 0, **model_kwargs):
    """(model, variables) for `model.apply(variables, images, train=False) -> logits`.

    num_classes: None keeps the checkpoint's head; another number gets a new head (seeded).
    image_size: a ViT's resolution (its position embedding is resized); default: the
    checkpoint's own. model_kwargs override model fields (e.g. dtype, drop_path_rate)."""
    return build(read(path, model, layout), model, num_classes, image_size, seed,
                 **model_kwargs)


def save(directory: str, model: str, variables: dict, ckpt: Checkpoint) -> None:
    """Writes `variables` as a jaxcls checkpoint that `config.init_from` and `load` read."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    checkpoint.save_tree(os.path.join(directory, "variables"), variables)
    meta = {"model": model, "model_kwargs": ckpt.model_kwargs,
            "preprocessing": ckpt.preprocessing, "source": os.path.abspath(ckpt.path),
            "source_layout": ckpt.layout,
            "num_classes": (int(variables["params"]["head"]["kernel"].shape[-1])
                            if "head" in variables["params"] else None)}  # None: an encoder
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
