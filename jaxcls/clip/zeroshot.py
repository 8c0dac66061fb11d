"""Zero-shot classification with CLIP: a classifier made from text prompts, no training.

Each class name fills every template of a prompt ensemble ("a photo of a {}."); the prompts'
text embeddings, each scaled to unit length, are averaged and rescaled to unit length: one
column per class (CLIP's notebook, "Prompt_Engineering_for_ImageNet"). An image's logits are
exp(logit_scale) times the cosine of its embedding with each column; predictions run over all
devices and processes through `jaxcls.evaluate.predict_source`, and the outputs are those of
`jaxcls.evaluate` (metrics.json, predictions.npz, report.html).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcls import evaluate
from jaxcls.classic import baseline
from jaxcls.clip import model as clip_model
from jaxcls.clip import tokenizer as clip_tokenizer
from jaxcls.clip import weights as clip_weights
from jaxcls.data import sources
from jaxcls.probe import features

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
# Prompt ensembles of the CLIP paper: its 18 CIFAR-10 templates and its 80 ImageNet ones.
TEMPLATE_SETS = ("cifar10", "imagenet")


def templates(spec: str) -> list[str]:
    """A prompt ensemble: `cifar10`, `imagenet`, or a UTF-8 text file with one template per
    line, `{}` standing for the class name."""
    path = os.path.join(TEMPLATE_DIR, f"{spec}.txt") if spec in TEMPLATE_SETS else spec
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--templates={spec!r} is neither one of {TEMPLATE_SETS} nor a "
                                f"file")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    bad = [line for line in lines if "{}" not in line]
    if not lines or bad:
        raise ValueError(f"templates {path}: every line needs a {{}} for the class name"
                         + (f"; these have none: {bad}" if bad else "; the file is empty"))
    return lines


def prompt_names(class_names: list[str], override: str | None = None) -> list[str]:
    """The names the prompts use: `override` ("a,b,c", in the dataset's class order) or the
    dataset's class names with underscores as spaces."""
    if not override:
        return [name.replace("_", " ") for name in class_names]
    names = [name.strip() for name in override.split(",")]
    if len(names) != len(class_names) or not all(names):
        raise ValueError(f"--classes has {len(names)} names for {len(class_names)} classes "
                         f"({', '.join(class_names)}); give one per class, in that order")
    return names


def text_classifier(model: clip_model.CLIP, variables: dict, names: list[str],
                    prompt_templates: list[str], batch_size: int = 256,
                    tokenizer: clip_tokenizer.Tokenizer | None = None) -> np.ndarray:
    """[embed_dim, num_classes] float32: each class's mean unit prompt embedding, at unit
    length."""
    tokenizer = tokenizer or clip_tokenizer.default()
    prompts = [t.replace("{}", name) for name in names for t in prompt_templates]
    tokens = tokenizer(prompts, model.text.context_length)
    run, batch = features.sharded_batches(
        lambda v, x: clip_model.unit(model.apply(v, x, method="encode_text")), batch_size)
    emb = np.concatenate([run(variables, tokens[s:s + batch])
                          for s in range(0, len(tokens), batch)])
    mean = emb.reshape(len(names), len(prompt_templates), -1).mean(axis=1)
    return np.asarray(clip_model.unit(jnp.asarray(mean))).T


def head(weights_path: str, class_names: list[str], template_spec: str = "cifar10",
         classes: str | None = None, quick_gelu: bool | None = None, batch_size: int = 256
         ) -> dict[str, np.ndarray]:
    """CLIP's zero-shot classifier as the head of a `clip_vit_*` model (whose head input is the
    unit image embedding): kernel = the class vectors times exp(logit_scale), bias 0, so the
    model's logits are the zero-shot logits."""
    model, variables, _ = clip_weights.load(weights_path, quick_gelu=quick_gelu)
    vectors = text_classifier(model, variables, prompt_names(class_names, classes),
                              templates(template_spec), batch_size)
    scale = np.exp(np.asarray(variables["params"]["logit_scale"], np.float32))
    return {"kernel": vectors * scale, "bias": np.zeros(len(class_names), np.float32)}


def classifier(model: clip_model.CLIP, variables: dict, class_vectors: np.ndarray
               ) -> tuple[clip_model.ZeroShotClassifier, dict]:
    """(module, variables) of the image tower with the zero-shot classifier on top."""
    params = variables["params"]
    module = clip_model.ZeroShotClassifier(model.image, class_vectors.shape[1])
    return module, {"params": {"image": params["image"], "logit_scale": params["logit_scale"],
                               "classes": jnp.asarray(class_vectors)}}


def run(weights_path: str, dataset: str, out_dir: str, template_spec: str = "cifar10",
        classes: str | None = None, split: str = "test", batch_size: int = 256,
        layout: str = "auto", quick_gelu: bool | None = None, tta: str = "",
        num_threads: int = 4, pictures: bool = True) -> dict:
    """Zero-shot evaluation of the CLIP weights at `weights_path` on `dataset`'s `split`; writes
    OUT_DIR/eval/<split>/ as jaxcls.evaluate does and returns the metrics."""
    if split not in ("test", "val"):
        raise ValueError(f"--split={split!r}: use test or val")
    prompt_templates = templates(template_spec)
    model, variables, pre = clip_weights.load(weights_path, layout, quick_gelu)
    size = model.image.image_size
    config = baseline.dataset_config(dataset, size, seed=0, crop_frac=pre["crop_frac"])
    config.mean, config.std = tuple(pre["mean"]), tuple(pre["std"])
    config.batch_size, config.num_threads = batch_size, num_threads
    data = sources.create(evaluate.streaming_config(config))
    held = data.eval if split == "test" else data.val
    if held is None:
        raise ValueError(f"--split=val: {dataset} has no val split")
    names = prompt_names(data.class_names, classes)
    logging.info("zero-shot: %d classes x %d templates (%s) at %d px", len(names),
                 len(prompt_templates), template_spec, size)
    class_vectors = text_classifier(model, variables, names, prompt_templates, batch_size)
    module, zs_variables = classifier(model, variables, class_vectors)
    title = f"{weights_path} (CLIP zero-shot)"
    zs_run = evaluate.Run(out_dir, config, data.class_names, title, module, zs_variables)
    pred = evaluate.predict_source(zs_run, held, tta)
    labels, log_probs, index = pred["labels"], pred["log_probs"], pred["index"]
    record, calibrated = evaluate.self_calibration(
        labels, log_probs, split, "zero-shot CLIP was fitted on no split of this dataset")
    head = {"checkpoints": [title], "weights": os.path.abspath(weights_path), "split": split,
            "tta": tta, "skipped": len(held) - len(labels),
            "method": {"zero_shot": "CLIP", "templates": template_spec,
                       "num_templates": len(prompt_templates), "prompt_class_names": names,
                       "image_size": size, "layout": layout,
                       "quick_gelu": model.text.quick_gelu,
                       "logit_scale": float(jnp.exp(variables["params"]["logit_scale"]))}}
    paths = (np.array([held.name(int(i)) for i in index]) if dataset.startswith("folder:")
             else None)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        np.save(os.path.join(out_dir, "class_vectors.npy"), class_vectors)
    return evaluate.write_outputs(os.path.join(out_dir, "eval", split), head, labels,
                                  np.exp(log_probs), np.exp(calibrated), record,
                                  data.class_names, lambda i: held[int(index[i])]["image"],
                                  paths, pictures)
