"""One shift analysis of a run against unlabeled target images (see the package docstring)."""

import json
import os
from concurrent.futures import ThreadPoolExecutor

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import logging  # noqa: E402
from scipy.special import softmax  # noqa: E402

from jaxcls import evaluate, predict, report  # noqa: E402
from jaxcls.classic import baseline  # noqa: E402
from jaxcls.data import sources  # noqa: E402
from jaxcls.probe import features  # noqa: E402
from jaxcls.shift import mmd, priors, scores  # noqa: E402

SCORES = ("msp", "energy", "mahalanobis")


def load_images(paths: list[str], size: int, crop_frac: float, threads: int = 8
                ) -> tuple[np.ndarray, list[str], list[str]]:
    """(uint8 [N, S, S, 3], the readable paths, the unreadable ones) of image files/folders."""
    files = list(predict.expand(paths))
    with ThreadPoolExecutor(threads) as pool:
        loaded = list(pool.map(lambda p: predict.load_or_error(p, size, crop_frac), files))
    ok = [i for i, (x, _) in enumerate(loaded) if x is not None]
    if not ok:
        raise ValueError(f"no readable images in {paths}")
    return (np.stack([loaded[i][0] for i in ok]), [files[i] for i in ok],
            [files[i] for i, (x, _) in enumerate(loaded) if x is None])


def _sample(images: np.ndarray, labels: np.ndarray, n: int, seed: int):
    pick = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
    return images[pick], labels[pick]


def analyse(run: evaluate.Run, target: np.ndarray, reference: tuple, train: tuple,
            keep: float = 0.95, permutations: int = 200, seed: int = 0) -> tuple[dict, dict]:
    """(metrics, per-image arrays) for target images against the eval split `reference`
    (images, labels) and the training sample `train` (images, labels)."""
    c = run.config
    extract = lambda x, name: features.extract(run.model, run.variables, x, c.mean, c.std,  # noqa: E731
                                              label=name, with_logits=True)
    (f_train, _), (f_ref, z_ref), (f_tgt, z_tgt) = (
        extract(train[0], "train"), extract(reference[0], "eval"), extract(target, "target"))
    maha = scores.Mahalanobis(f_train, train[1])
    fns = {"msp": scores.msp, "energy": scores.energy, "mahalanobis": maha}
    inputs = {"msp": (z_ref, z_tgt), "energy": (z_ref, z_tgt), "mahalanobis": (f_ref, f_tgt)}
    result, arrays = {"target_images": len(target), "eval_images": len(reference[1]),
                      "train_images_fitted": len(train[1]), "keep": keep, "scores": {}}, {}
    for name in SCORES:
        ref_scores, tgt_scores = (fns[name](x) for x in inputs[name])
        t = scores.threshold(ref_scores, keep)
        result["scores"][name] = {"threshold": t,
                                  "flagged_target": float((tgt_scores > t).mean()),
                                  "flagged_eval": float((ref_scores > t).mean()),
                                  "mean_target": float(tgt_scores.mean()),
                                  "mean_eval": float(ref_scores.mean())}
        arrays[f"{name}_eval"], arrays[name] = ref_scores, tgt_scores
    result["mmd"] = mmd.test(f_ref, f_tgt, permutations, seed=seed)
    num_classes = len(run.class_names)
    source_priors = np.bincount(train[1], minlength=num_classes) / len(train[1])
    p_tgt = softmax(z_tgt, axis=-1)
    em_priors, corrected = priors.em(p_tgt, source_priors)
    result["priors"] = {
        "classes": list(run.class_names), "source": source_priors.tolist(),
        "predicted": (np.bincount(p_tgt.argmax(1), minlength=num_classes)
                      / len(p_tgt)).tolist(),
        "bbse": priors.bbse(reference[1], z_ref.argmax(1), z_tgt.argmax(1),
                            num_classes).tolist(),
        "em": em_priors.tolist()}
    arrays.update(probs=p_tgt.astype(np.float32), corrected_probs=corrected.astype(np.float32))
    return result, arrays


def _histograms(result: dict, arrays: dict, path: str) -> str:
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.4))
    for ax, name in zip(axes, SCORES, strict=False):
        lo = min(arrays[f"{name}_eval"].min(), arrays[name].min())
        hi = max(arrays[f"{name}_eval"].max(), arrays[name].max())
        bins = np.linspace(lo, hi, 40)
        ax.hist(arrays[f"{name}_eval"], bins, alpha=0.6, density=True, label="eval split")
        ax.hist(arrays[name], bins, alpha=0.6, density=True, label="target")
        ax.axvline(result["scores"][name]["threshold"], color="k", ls="--", lw=1)
        ax.set_title(f"{name}: {result['scores'][name]['flagged_target']:.1%} of target flagged")
        ax.legend(fontsize=8)
    p = result["priors"]
    x = np.arange(len(p["classes"]))
    for i, key in enumerate(("source", "bbse", "em")):
        axes[3].bar(x + (i - 1) * 0.27, p[key], 0.27, label=key)
    axes[3].set_xticks(x, p["classes"], rotation=60, fontsize=7)
    axes[3].set_title("class priors")
    axes[3].legend(fontsize=8)
    return report.save_figure(fig, path)


def run_shift(workdir: str, targets: list[str], out_dir: str | None = None,
              which: str = "best", train_examples: int = 10000, eval_examples: int = 10000,
              keep: float = 0.95, permutations: int = 200, seed: int = 0) -> dict:
    """Writes OUT_DIR (default W/shift/<target folder name>)/metrics.json, scores.npz and
    report.html; returns the metrics."""
    run = evaluate.load_run(workdir, which)
    c = run.config
    dataset = sources.create(evaluate.streaming_config(c))
    train = _sample(*baseline.load_split(dataset.train), train_examples, seed)
    reference = _sample(*baseline.load_split(dataset.eval), eval_examples, seed)
    target, paths, unreadable = load_images(targets, c.image_size, c.crop_frac, c.num_threads)
    for p in unreadable:
        logging.warning("skipping unreadable image %s", p)
    result, arrays = analyse(run, target, reference, train, keep, permutations, seed)
    result.update(workdir=os.path.abspath(workdir), checkpoint=run.step_dir, targets=targets,
                  unreadable=len(unreadable))
    name = os.path.basename(os.path.normpath(targets[0])) or "target"
    out_dir = out_dir or os.path.join(workdir, "shift", name)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2)
    np.savez_compressed(os.path.join(out_dir, "scores.npz"), paths=np.array(paths), **arrays)
    png = _histograms(result, arrays, os.path.join(out_dir, "scores.png"))
    rows = [[n, s["flagged_target"], s["flagged_eval"], s["threshold"]]
            for n, s in result["scores"].items()]
    m = result["mmd"]
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>shift: "
            f"{name}</title><style>{report.CSS}</style></head><body><h1>Shift of {name} "
            f"against {run.step_dir}</h1><p>{len(target)} target images ({len(unreadable)} "
            f"unreadable skipped). Feature MMD<sup>2</sup> {m['mmd2']:.4g}, permutation "
            f"p-value {m['p_value']:.4f}.</p>"
            + report.html_table(["score", "target flagged", "eval flagged", "threshold"], rows)
            + report.html_section("scores and priors", png)
            + report.html_table(["class", "source", "predicted", "BBSE", "EM"],
                            [[cls, *vals] for cls, *vals in zip(
                                result["priors"]["classes"], result["priors"]["source"],
                                result["priors"]["predicted"], result["priors"]["bbse"],
                                result["priors"]["em"], strict=True)])
            + "</body></html>")
    with open(os.path.join(out_dir, "report.html"), "w", encoding="utf-8") as f:
        f.write(page)
    logging.info("target %s: %s flagged by Mahalanobis, MMD p=%.4f; wrote %s", name,
                 f"{result['scores']['mahalanobis']['flagged_target']:.1%}", m["p_value"],
                 out_dir)
    return result
