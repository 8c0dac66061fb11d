"""Accuracy of a trained run under the common corruptions: the CIFAR-10-C / ImageNet-C protocol.

    python -m jaxcls.robustness --workdir=W [--corruptions=all] [--severities=1,2,3,4,5]
        [--baseline=W2] [--split=test] [--checkpoint=best]

Loads the run as `jaxcls.evaluate` does, corrupts each batch of the eval split on device
(`corruptions.corrupt_with_keys`, one key per image from a hash of its pixels, so the same image
gets the same corruption on any batch size or device count; the result truncated to uint8 as the
released datasets are), and writes to W/eval/<split>_corruptions/:
- metrics.json: clean accuracy; accuracy[corruption][severity]; mean corruption accuracy (over
  the corruptions and severities asked); accuracy by severity; with a baseline run, Hendrycks &
  Dietterich's corruption error CE_c = sum_s E_{s,c} / sum_s E^base_{s,c} and relative CE_c =
  sum_s (E_{s,c} - E_clean) / sum_s (E^base_{s,c} - E^base_clean), in percent, and their means
  over the corruptions, mCE and relative mCE (the baseline's own cells are read from its
  metrics.json when it covers them, else computed and stored there);
- heatmap.png (accuracy, corruption x severity) and severity.png (accuracy against severity).

Parameters are CIFAR-10-C's below 128 px, ImageNet-C's above (`corruptions.SMALL_SIDE`); the
corruptions approximated (motion blur, snow, frost, spatter) are listed in metrics.json.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcls import evaluate, report, sharding
from jaxcls.data import sources
from jaxcls.robustness import corruptions

APPROXIMATED = {"motion_blur": "whole-pixel shift kernel in place of ImageMagick's",
                "snow": "the same motion blur in place of ImageMagick's",
                "frost": "procedural frost texture in place of the original photographs",
                "spatter": "water drops' shading approximated (mud as the original)"}
FILENAME = "metrics.json"


def output_dir(workdir: str, split: str) -> str:
    return os.path.join(workdir, "eval", f"{split}_corruptions")


def parse_severities(spec: str) -> list[int]:
    """'1,2,3,4,5' -> [1, 2, 3, 4, 5], each checked."""
    try:
        values = sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        raise ValueError(f"--severities={spec!r}: comma-separated integers in 1..5") from None
    if not values or any(s not in corruptions.SEVERITIES for s in values):
        raise ValueError(f"--severities={spec!r}: comma-separated integers in 1..5")
    return values


def corrupted_predict_fn(run: evaluate.Run, name: str, severity: int, seed: int = 0):
    """Jitted (variables, uint8 images [B, S, S, 3]) -> log-probabilities of the corrupted
    images, the batch split over all devices (as evaluate.make_predict_fn)."""
    predict = evaluate.log_probs_fn(run)
    salt = list(corruptions.CORRUPTIONS).index(name) * 16 + severity

    def fn(variables, images):
        keys = jax.vmap(lambda k: jax.random.fold_in(k, salt))(
            corruptions.content_keys(seed, images))
        x = corruptions.corrupt_with_keys(keys, images, name, severity)
        return predict(variables, jnp.floor(jnp.clip(x, 0, 255)).astype(jnp.uint8))

    mesh = sharding.make_mesh()
    return jax.jit(fn, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                   out_shardings=sharding.batch_sharding(mesh))


def _accuracy(run: evaluate.Run, source, predict_fn=None) -> float:
    """Top-1 accuracy on `source` through evaluate.predict_source, with `predict_fn` in place
    of the run's own (clean) one."""
    if predict_fn is not None:
        run = dataclasses.replace(run, _predict_fns={"": predict_fn})
    out = evaluate.predict_source(run, source)
    return float(np.mean(out["log_probs"].argmax(-1) == out["labels"]))


def corruption_errors(result: dict, base: dict, names: list[str], severities: list[int]
                      ) -> dict:
    """CE and relative CE per corruption (percent) and their means, against `base`."""
    ce, rel = {}, {}
    clean, base_clean = 1 - result["clean_accuracy"], 1 - base["clean_accuracy"]
    for n in names:
        errors = [1 - result["accuracy"][n][str(s)] for s in severities]
        base_errors = [1 - base["accuracy"][n][str(s)] for s in severities]
        ce[n] = 100.0 * sum(errors) / max(sum(base_errors), 1e-12)
        base_gap = sum(e - base_clean for e in base_errors)
        rel[n] = (100.0 * sum(e - clean for e in errors) / base_gap if abs(base_gap) > 1e-12
                  else None)
    rel_values = [v for v in rel.values() if v is not None]
    return {"ce": ce, "mce": float(np.mean(list(ce.values()))), "relative_ce": rel,
            "relative_mce": float(np.mean(rel_values)) if rel_values else None}


def _covers(stored: dict, names: list[str], severities: list[int]) -> bool:
    return all(str(s) in stored.get("accuracy", {}).get(n, {}) for n in names
               for s in severities)


def _baseline(baseline: str, names: list[str], severities: list[int], split: str,
              which: str, seed: int, ema: bool) -> dict:
    path = os.path.join(output_dir(baseline, split), FILENAME)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if _covers(stored, names, severities) and stored.get("seed") == seed:
            return stored
    return benchmark(baseline, names, severities, split=split, which=which, seed=seed, ema=ema)


def benchmark(workdir: str, names: list[str], severities: list[int], baseline: str | None = None,
              split: str = "test", which: str = "best", seed: int = 0,
              out_dir: str | None = None, pictures: bool = True, ema: bool = False) -> dict:
    """Accuracy of the run in `workdir` on `split` under each corruption and severity (see the
    module docstring); writes metrics.json and, with `pictures`, the PNGs; returns the metrics."""
    if split not in ("test", "val", "train"):
        raise ValueError(f"--split={split!r}: use test, val or train")
    for n in names:
        corruptions.get(n)
    run = evaluate.load_run(workdir, which, ema)
    dataset = sources.create(evaluate.streaming_config(run.config))
    source = evaluate._split_source(dataset, split, workdir)
    size = run.config.image_size
    result = {"workdir": os.path.abspath(workdir), "checkpoint": run.step_dir, "split": split,
              "seed": seed, "ema": ema, "image_size": size,
              "parameters": "CIFAR-10-C" if corruptions.is_small(size, size) else "ImageNet-C",
              "corruptions": names, "severities": severities,
              "approximated": {n: APPROXIMATED[n] for n in names if n in APPROXIMATED},
              "clean_accuracy": _accuracy(run, source), "accuracy": {}}
    for n in names:
        result["accuracy"][n] = {}
        for s in severities:
            acc = _accuracy(run, source, corrupted_predict_fn(run, n, s, seed))
            result["accuracy"][n][str(s)] = acc
            logging.info("%s severity %d: accuracy %.4f", n, s, acc)
    cells = np.array([[result["accuracy"][n][str(s)] for s in severities] for n in names])
    result["mean_corruption_accuracy"] = float(cells.mean())
    result["accuracy_by_severity"] = {str(s): float(v) for s, v in
                                      zip(severities, cells.mean(0), strict=True)}
    result["baseline"] = None
    if baseline is not None:
        same = os.path.abspath(baseline) == os.path.abspath(workdir)
        base = result if same else _baseline(baseline, names, severities, split, which, seed,
                                               ema)
        result["baseline"] = {"workdir": base["workdir"], "checkpoint": base["checkpoint"],
                              "clean_accuracy": base["clean_accuracy"],
                              **corruption_errors(result, base, names, severities)}
    out_dir = out_dir or output_dir(workdir, split)
    if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, FILENAME), "w") as f:
            json.dump(result, f, indent=2)
        if pictures:
            heatmap_figure(cells, names, severities, os.path.join(out_dir, "heatmap.png"))
            severity_figure(cells, names, severities, result["clean_accuracy"],
                            os.path.join(out_dir, "severity.png"))
    logging.info("%s: clean %.4f, mean corruption accuracy %.4f; wrote %s", split,
                 result["clean_accuracy"], result["mean_corruption_accuracy"], out_dir)
    return result


def heatmap_figure(cells: np.ndarray, names: list[str], severities: list[int], path: str) -> str:
    """Accuracy per corruption (rows) and severity (columns), annotated."""
    plt = report.plt
    fig, ax = plt.subplots(figsize=(1.0 * len(severities) + 3, 0.38 * len(names) + 1.4))
    image = ax.imshow(cells, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(severities)), [str(s) for s in severities])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("severity")
    for (i, j), v in np.ndenumerate(cells):
        ax.text(j, i, f"{100 * v:.1f}", ha="center", va="center", fontsize=8,
                color="white" if v < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="top-1 accuracy")
    ax.set_title("accuracy under corruption")
    return report.save_figure(fig, path)


def severity_figure(cells: np.ndarray, names: list[str], severities: list[int], clean: float,
                    path: str) -> str:
    """Accuracy against severity: one thin line per corruption, their mean bold, clean dashed."""
    plt = report.plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in zip(names, cells, strict=True):
        ax.plot(severities, row, marker=".", linewidth=1, alpha=0.7, label=name)
    ax.plot(severities, cells.mean(0), color="black", linewidth=2.5, marker="o", label="mean")
    ax.axhline(clean, color="grey", linestyle="--", label="clean")
    ax.set_xticks(severities)
    ax.set_xlabel("severity")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return report.save_figure(fig, path)
