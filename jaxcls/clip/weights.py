"""CLIP weights from OpenAI / open_clip state dicts (.pt, .pth, .bin, .safetensors; ViT and RN50-
style ModifiedResNet image towers) and Hugging Face `CLIPModel` folders, into
jaxcls.clip.model.CLIP.

    model, variables = jaxcls.clip.weights.load("ViT-B-32.pt")
    image_emb = model.apply(variables, images, method="encode_image")

The architecture is read off the tensors (widths, depths, patch size, resolution, vocabulary,
context); what tensors cannot tell comes from a Hugging Face folder's config.json, or else from
OpenAI's conventions: one attention head per 64 features and QuickGELU (open_clip's models
trained with exact GELU need `quick_gelu=False`). The renaming is the `clip` family's rules in
jaxcls/weights/layouts.py; shapes are checked key by key (jaxcls.weights.fit).
"""

import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import weights
from jaxcls.clip import model as clip_model
from jaxcls.clip import resnet
from jaxcls.weights import files, layouts

# CLIP's image normalisation (OpenAI's, in [0, 1] units); images are resized on their shorter
# side and centre-cropped (crop_frac 1.0).
PREPROCESSING = {"mean": (0.48145466, 0.4578275, 0.40821073),
                 "std": (0.26862954, 0.26130258, 0.27577711), "crop_frac": 1.0}
HEAD_WIDTH = 64  # OpenAI's CLIPs: heads = width // 64 in both towers


def _depth(tensors: dict, tower: str) -> int:
    pattern = re.compile(rf"params/{tower}/block(\d+)/norm1/scale")
    return len({m[1] for k in tensors if (m := pattern.fullmatch(k))})


def _heads(width: int, given: int | None, tower: str) -> int:
    if given:
        return given
    if width % HEAD_WIDTH:
        raise ValueError(f"the {tower} tower is {width} wide, not a multiple of {HEAD_WIDTH}: "
                         f"pass its number of attention heads")
    return width // HEAD_WIDTH


def _hf_config(path: str) -> dict:
    """{vision_heads, text_heads, quick_gelu} a Hugging Face folder's config.json states."""
    if not os.path.isdir(path):
        return {}
    config = files.read_json(path, "config.json")
    vision, text = config.get("vision_config", {}), config.get("text_config", {})
    out = {"vision_heads": vision.get("num_attention_heads"),
           "text_heads": text.get("num_attention_heads")}
    acts = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
    if len(acts) > 1 or not acts <= {"quick_gelu", "gelu"}:
        raise ValueError(f"{path}: activations {sorted(acts)}; jaxcls' CLIP has quick_gelu or "
                         f"gelu in both towers")
    out["quick_gelu"] = acts == {"quick_gelu"}
    return out


def architecture(tensors: dict[str, np.ndarray], vision_heads: int | None = None,
                 text_heads: int | None = None, quick_gelu: bool = True,
                 dtype: Any = jnp.float32, attention: str | None = None) -> clip_model.CLIP:
    """The CLIP module whose parameters have the shapes of `tensors` (jaxcls names)."""
    t = tensors
    if "params/image/patch_embed/kernel" not in t:
        image = _resnet_tower(t, vision_heads, dtype)
        return clip_model.CLIP(image, _text_tower(t, text_heads, quick_gelu, dtype, attention))
    kernel = t["params/image/patch_embed/kernel"]  # [p, p, 3, width]
    patch, width = int(kernel.shape[0]), int(kernel.shape[-1])
    tokens = int(np.prod(t["params/image/pos_embedding"].shape)) // width
    grid = int(round(np.sqrt(tokens - 1)))
    if grid * grid != tokens - 1:
        raise ValueError(f"the image position embedding has {tokens} tokens, not 1 + a square")
    image = clip_model.ImageTower(
        patch_size=patch, width=width, depth=_depth(t, "image"),
        num_heads=_heads(width, vision_heads, "image"),
        mlp_dim=int(t["params/image/block0/mlp/fc1/kernel"].shape[-1]),
        embed_dim=int(t["params/image/proj/kernel"].shape[-1]), image_size=grid * patch,
        quick_gelu=quick_gelu, attention=attention, dtype=dtype)
    return clip_model.CLIP(image, _text_tower(t, text_heads, quick_gelu, dtype, attention))


def _text_tower(t: dict, heads: int | None, quick_gelu: bool, dtype: Any,
                attention: str | None) -> clip_model.TextTower:
    vocab, width = t["params/text/token_embedding/embedding"].shape
    return clip_model.TextTower(
        vocab_size=int(vocab), context_length=int(t["params/text/pos_embedding"].shape[0]),
        width=int(width), depth=_depth(t, "text"), num_heads=_heads(int(width), heads, "text"),
        mlp_dim=int(t["params/text/block0/mlp/fc1/kernel"].shape[-1]),
        embed_dim=int(t["params/text/proj/kernel"].shape[-1]), quick_gelu=quick_gelu,
        attention=attention, dtype=dtype)


def _resnet_tower(t: dict, heads: int | None, dtype: Any) -> resnet.ModifiedResNetTower:
    """RN50-style towers: stage sizes from the block keys, heads = width * 32 // 64."""
    width = int(t["params/image/stem_conv3/kernel"].shape[-1])
    blocks = re.compile(r"params/image/stage(\d)_block(\d+)/conv1/kernel")
    found = [tuple(map(int, m.groups())) for k in t if (m := blocks.fullmatch(k))]
    stage_sizes = tuple(max(b for s, b in found if s == stage) for stage in range(1, 5))
    tokens = int(t["params/image/attnpool/pos_embedding"].shape[0])
    grid = int(round(np.sqrt(tokens - 1)))
    return resnet.ModifiedResNetTower(
        stage_sizes=stage_sizes, width=width, num_heads=_heads(width * 32, heads, "image"),
        embed_dim=int(t["params/image/attnpool/attn/out/kernel"].shape[-1]),
        image_size=grid * 32, dtype=dtype)


def read(path: str, layout: str = "auto", source: dict | None = None) -> weights.Checkpoint:
    """The tensors at `path` (or `source`, its tensors already read) in jaxcls' CLIP names;
    layout: auto | openai | hf."""
    source = files.read_tensors(path) if source is None else source
    if layout == "auto":
        layout = layouts.detect(list(source))
    if layout not in ("openai", "hf"):
        raise ValueError(f"{path}: CLIP weights come in the openai (OpenAI, open_clip) or hf "
                         f"(transformers CLIPModel) layout, not {layout!r}")
    family = "clip_rn" if "visual.layer1.0.conv1.weight" in source else "clip"
    tensors, unexpected = layouts.convert(source, family, layout)
    pre = dict(PREPROCESSING)
    if layout == "hf" and os.path.isdir(path):
        proc = files.read_json(path, "preprocessor_config.json")
        if "image_mean" in proc:
            pre["mean"], pre["std"] = tuple(proc["image_mean"]), tuple(proc["image_std"])
    return weights.Checkpoint(path, layout, tensors, _hf_config(path), pre, unexpected)


def load(path: str, layout: str = "auto", quick_gelu: bool | None = None,
         vision_heads: int | None = None, text_heads: int | None = None,
         dtype: Any = jnp.float32, attention: str | None = None
         ) -> tuple[clip_model.CLIP, dict, dict]:
    """(model, variables, preprocessing {mean, std, crop_frac}) of the CLIP weights at `path`.

    quick_gelu / vision_heads / text_heads: None takes them from a Hugging Face config.json,
    else OpenAI's conventions (QuickGELU, one head per 64 features)."""
    ckpt = read(path, layout)
    known = ckpt.model_kwargs
    model = architecture(
        ckpt.tensors, vision_heads or known.get("vision_heads"),
        text_heads or known.get("text_heads"),
        known.get("quick_gelu", True) if quick_gelu is None else quick_gelu, dtype, attention)
    size, length = model.image.image_size, model.text.context_length
    abstract = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, size, size, 3)),
                                                   jnp.zeros((1, length), jnp.int32)),
                              jax.random.key(0))
    variables = weights.fit(ckpt, abstract, new_head=dict)
    return model, jax.tree.map(jnp.asarray, variables), ckpt.preprocessing


def image_tower_checkpoint(path: str, layout: str = "auto", source: dict | None = None
                           ) -> weights.Checkpoint:
    """The image tower of the CLIP weights at `path` as a ViT classifier's checkpoint (models
    `clip_vit_*`, through `jaxcls.weights.read` and so `config.init_from`): its params, `proj`
    included, moved to the top level and shaped as a ViT's, with no head (a fine-tune makes
    one); the text tower and logit_scale are left out."""
    ckpt = read(path, layout, source)
    width = ckpt.tensors["params/image/patch_embed/kernel"].shape[-1]
    shapes = {"params/pos_embedding": (1, -1, width), "params/cls": (1, 1, width)}
    tensors = {}
    for key, value in ckpt.tensors.items():
        if key.startswith("params/image/"):
            key = "params/" + key.removeprefix("params/image/")
            tensors[key] = value.reshape(shapes[key]) if key in shapes else value
    known, kwargs = ckpt.model_kwargs, {}
    if "quick_gelu" in known:
        kwargs["quick_gelu"] = known["quick_gelu"]
    if known.get("vision_heads"):
        kwargs["num_heads"] = known["vision_heads"]
    return weights.Checkpoint(path, ckpt.layout, tensors, kwargs, ckpt.preprocessing,
                              ckpt.unexpected)
