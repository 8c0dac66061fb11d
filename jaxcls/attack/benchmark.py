"""Robust accuracy of a trained run under an adversarial attack.

    python -m jaxcls.attack --workdir=W --attack=pgd --norm=linf --eps=8/255 --steps=20
        [--restarts=1] [--step_size=0] [--targeted] [--examples=N] [--split=test]

Loads the run as `jaxcls.evaluate` does and attacks each batch of the split on all devices
(jitted, the batch split over the mesh), in pixel space [0, 1] with the run's normalisation
inside the model function; adversarial images stay float (not rounded to uint8), as
RobustBench evaluates them. Robust accuracy is AutoAttack's: the fraction of examples
classified correctly both clean and attacked. Before anything is written, every perturbation's
norm is checked against eps (+1e-6) and every adversarial pixel against [0, 1]; a violation
is an error. Writes to W/eval/<split>_<attack>[-t]_<norm>_eps<eps>/:
- metrics.json: what was attacked and how, clean_accuracy, robust_accuracy, the perturbation
  norms (max, mean), and every metric of `jaxcls.evaluate` on the adversarial predictions
  (their `accuracy` is the adversarial accuracy; calibration is fitted on them as evaluate
  does without a val split); predictions.npz (adversarial probabilities) and report.html;
- robustbench.json: RobustBench's model-info fields (clean_acc and robust_acc in percent as
  strings, eps as given, e.g. "8/255"); its `autoattack_acc` field is left out, since no
  full AutoAttack (APGD-CE, APGD-T, FAB-T, Square) ran: `attack` names what did;
- examples.png: the first examples clean, attacked and their perturbation.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jaxcls import evaluate, report, sharding
from jaxcls.attack import attacks, threat
from jaxcls.data import augment, loader, sources

NORM_SLACK = 1e-6  # float32 rounding of x + d - x; anything more is a bug
EXAMPLES_SHOWN = 8


def pixel_logits_fn(run: evaluate.Run):
    """(variables, images [B, H, W, 3] in [0, 1]) -> float32 logits: the run's normalisation
    and its model in inference mode."""
    config = run.config

    def logits(variables, x):
        z = augment.normalize(x * 255.0, config.mean, config.std, jnp.dtype(config.dtype))
        return run.model.apply(variables, z, train=False).astype(jnp.float32)

    return logits


def make_attack_fn(run: evaluate.Run, spec: attacks.Spec, mesh=None):
    """Jitted (variables, uint8 images, labels, key) -> (adversarial images in [0, 1], clean
    log-probabilities, adversarial log-probabilities, perturbation norms [B], whether each
    adversarial image lies in [0, 1] [B]); the batch is split over all devices."""
    logits = pixel_logits_fn(run)
    mesh = mesh or sharding.make_mesh()

    def fn(variables, images, labels, key):
        x = images.astype(jnp.float32) / 255.0
        model = lambda xa: logits(variables, xa)  # noqa: E731
        adv = attacks.run(spec, model, x, labels, key)
        flat = adv.reshape(adv.shape[0], -1)
        in_box = (jnp.min(flat, axis=1) >= 0.0) & (jnp.max(flat, axis=1) <= 1.0)
        return (adv, jax.nn.log_softmax(model(x)), jax.nn.log_softmax(model(adv)),
                threat.norms(adv - x, spec.norm), in_box)

    batch, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    return jax.jit(fn, in_shardings=(replicated, batch, batch, replicated), out_shardings=batch)


def output_dir(workdir: str, split: str, spec: attacks.Spec, eps_text: str) -> str:
    """WORKDIR/eval/<split>_<attack>[-t]_<norm>_eps<eps>, e.g. eval/test_pgd_linf_eps8-255."""
    name = f"{split}_{spec.attack}{'-t' if spec.targeted else ''}_{spec.norm}_eps" + \
        eps_text.replace("/", "-")
    return os.path.join(workdir, "eval", name)


def sample(source, examples: int, seed: int):
    """A seeded random `examples` of `source`, in source order (all when 0 or more than it
    holds): folder datasets list the classes in order, so the first N would be few classes."""
    if not examples or examples >= len(source):
        return source
    keep = np.sort(np.random.default_rng(seed).permutation(len(source))[:examples])
    return sources.subset(source, keep)


def attack_source(run: evaluate.Run, source, spec: attacks.Spec, seed: int = 0,
                  batch_size: int = 0) -> dict[str, np.ndarray]:
    """{"labels", "index", "clean_log_probs", "adv_log_probs", "norms", "in_box"} for every
    readable example of `source` in source order, and "shown": the first batch's first
    adversarial images."""
    mesh = sharding.make_mesh()
    batch_sharding = sharding.batch_sharding(mesh)
    attack = make_attack_fn(run, spec, mesh)
    variables = jax.device_put(run.variables, sharding.replicated(mesh))
    size = batch_size or evaluate.global_batch_size(run.config)
    size = max(size // jax.device_count(), 1) * jax.device_count()
    num_batches = -(-len(source) // size)
    parts, shown, last_log = [], None, time.monotonic()
    for i, batch in enumerate(loader.eval_batches(source, size, run.config.num_threads)):
        arrays = loader.to_global(batch, batch_sharding)
        index = jax.make_array_from_process_local_data(batch_sharding, batch["index"])
        key = jax.random.fold_in(jax.random.key(seed), i)
        adv, clean, attacked, norms, in_box = attack(variables, arrays["image"],
                                                     arrays["label"], key)
        part = multihost_utils.process_allgather(
            {"labels": arrays["label"], "mask": arrays["mask"], "index": index,
             "clean_log_probs": clean, "adv_log_probs": attacked, "norms": norms,
             "in_box": in_box}, tiled=True)
        if shown is None:  # the first batch's first real examples, for the picture
            rows = np.flatnonzero(part["mask"] > 0)[:EXAMPLES_SHOWN]
            shown = {"images": multihost_utils.process_allgather(adv, tiled=True)[rows],
                     **{k: part[k][rows] for k in ("index", "clean_log_probs",
                                                    "adv_log_probs")}}
        parts.append(part)
        if i + 1 == num_batches or time.monotonic() - last_log >= sources.PROGRESS_EVERY_S:
            logging.info("attacked %d/%d batches", i + 1, num_batches)
            last_log = time.monotonic()
    result = evaluate.in_source_order(parts)
    result["shown"] = shown
    return result


def check_perturbations(out: dict, spec: attacks.Spec) -> dict:
    """The norms' summary; raises when an adversarial image leaves the ball or [0, 1]."""
    norms = out["norms"]
    worst = float(norms.max()) if len(norms) else 0.0
    if worst > spec.eps + NORM_SLACK:
        raise RuntimeError(f"{spec.describe()}: a perturbation of {spec.norm} norm {worst:.8g} "
                           f"exceeds eps={spec.eps:.8g} (+{NORM_SLACK})")
    if not out["in_box"].all():
        raise RuntimeError(f"{spec.describe()}: {int((~out['in_box']).sum())} adversarial "
                           f"images leave [0, 1]")
    return {"norm": spec.norm, "max": worst, "mean": float(norms.mean()) if len(norms) else 0.0,
            "eps": spec.eps, "checked": f"max <= eps + {NORM_SLACK}, pixels in [0, 1]"}


def robustbench_record(run: evaluate.Run, spec: attacks.Spec, eps_text: str, clean: float,
                       robust: float, examples: int) -> dict:
    """RobustBench's model-info fields for this run (accuracies in percent, as strings)."""
    dataset = run.config.dataset
    return {"name": os.path.basename(os.path.abspath(run.workdir)),
            "dataset": os.path.basename(dataset.split(":", 1)[-1].rstrip("/")) or dataset,
            "threat_model": "Linf" if spec.norm == "linf" else "L2", "eps": eps_text,
            "architecture": run.config.model, "additional_data": False,
            "number_forward_passes": 1, "clean_acc": f"{100 * clean:.2f}",
            "robust_acc": f"{100 * robust:.2f}", "attack": spec.describe(),
            "n_examples": examples}


def examples_figure(clean: np.ndarray, adv: np.ndarray, clean_pred: list[str],
                    adv_pred: list[str], spec: attacks.Spec, path: str) -> str:
    """Clean (top), attacked (middle) and the perturbation scaled to the ball (bottom)."""
    plt = report.plt
    n = len(adv)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    d = adv - clean
    scale = (2 * spec.eps if spec.norm == "linf" else 2 * max(float(np.abs(d).max()), 1e-12))
    for j in range(n):
        shown = [(clean[j], clean_pred[j]), (adv[j], adv_pred[j]),
                 (np.clip(d[j] / max(scale, 1e-12) + 0.5, 0, 1), "perturbation")]
        for i, (image, title) in enumerate(shown):
            axes[i, j].imshow(image)
            axes[i, j].set_title(title, fontsize=7)
            axes[i, j].axis("off")
    fig.suptitle(spec.describe(), fontsize=9)
    return report.save_figure(fig, path)


def attack_run(workdir: str, spec: attacks.Spec, eps_text: str | None = None,
               split: str = "test", which: str = "best", examples: int = 0, seed: int = 0,
               batch_size: int = 0, out_dir: str | None = None, pictures: bool = True,
               ema: bool = False) -> dict:
    """Clean and robust accuracy of the run in `workdir` on `split` under `spec` (see the
    module docstring); writes the outputs and returns the metrics."""
    spec.check()
    if split not in ("test", "val", "train"):
        raise ValueError(f"--split={split!r}: use test, val or train")
    eps_text = eps_text or f"{spec.eps:.6g}"
    run = evaluate.load_run(workdir, which, ema)
    dataset = sources.create(evaluate.streaming_config(run.config))
    source = sample(evaluate._split_source(dataset, split, workdir), examples, seed)
    start = time.monotonic()
    out = attack_source(run, source, spec, seed, batch_size)
    seconds = time.monotonic() - start
    perturbation = check_perturbations(out, spec)
    labels = out["labels"]
    clean_correct = out["clean_log_probs"].argmax(-1) == labels
    robust_correct = clean_correct & (out["adv_log_probs"].argmax(-1) == labels)
    clean, robust = float(clean_correct.mean()), float(robust_correct.mean())
    head = {"workdirs": [os.path.abspath(workdir)], "checkpoints": [run.step_dir], "split": split,
            "tta": "", "ema": ema, "attack": {**spec.__dict__, "eps_text": eps_text,
                                   "description": spec.describe(), "seed": seed},
            "examples": int(len(labels)), "skipped": len(source) - len(labels),
            "clean_accuracy": clean, "robust_accuracy": robust,
            "attack_success_rate": (1.0 - robust / clean) if clean else 0.0,
            "perturbation": perturbation, "attack_seconds": seconds}
    record, calibrated = evaluate.self_calibration(
        labels, out["adv_log_probs"], split, why="adversarial examples have no held-out split")
    out_dir = out_dir or output_dir(workdir, split, spec, eps_text)
    index = out["index"]
    result = evaluate.write_outputs(out_dir, head, labels, np.exp(out["adv_log_probs"]),
                                    np.exp(calibrated), record, run.class_names,
                                    lambda i: source[int(index[i])]["image"], None, pictures)
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "robustbench.json"), "w") as f:
            json.dump(robustbench_record(run, spec, eps_text, clean, robust, len(labels)), f,
                      indent=2)
        if pictures and len(labels):
            shown, names = out["shown"], run.class_names
            clean_images = np.stack([source[int(i)]["image"] for i in shown["index"]]) / 255.0
            examples_figure(clean_images, np.asarray(shown["images"]),
                            [names[int(c)] for c in shown["clean_log_probs"].argmax(-1)],
                            [names[int(c)] for c in shown["adv_log_probs"].argmax(-1)], spec,
                            os.path.join(out_dir, "examples.png"))
    logging.info("%s: clean %.4f, robust %.4f under %s (max %s norm %.6f); wrote %s", split,
                 clean, robust, spec.describe(), spec.norm, perturbation["max"], out_dir)
    return result
