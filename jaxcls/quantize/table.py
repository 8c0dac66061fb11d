"""Quantize a run and measure it beside the float model: top-1, bytes, CPU latency."""

import dataclasses
import json
import os
import statistics
import time

import jax
import numpy as np
from absl import logging

from jaxcls import evaluate
from jaxcls.data import augment, sources
from jaxcls.quantize import schemes


def calibration_batches(run: evaluate.Run, source, count: int, batch: int = 64, seed: int = 0):
    """A function yielding normalised batches of `count` seeded training images."""
    pick = np.sort(np.random.default_rng(seed).permutation(len(source))[:count])

    def batches():
        for s in range(0, len(pick), batch):
            images = np.stack([source[int(i)]["image"] for i in pick[s:s + batch]])
            yield augment.normalize(images, run.config.mean, run.config.std)
    return batches


def latency_ms(run: evaluate.Run, batch: int, repeats: int = 10) -> float:
    """Median milliseconds per image of the jitted forward pass at `batch` (compile excluded)."""
    fn = jax.jit(evaluate.log_probs_fn(run))
    size = run.config.image_size
    x = np.zeros((batch, size, size, 3), np.uint8)
    jax.block_until_ready(fn(run.variables, x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(run.variables, x))
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / batch


def top1(run: evaluate.Run, source) -> float:
    out = evaluate.predict_source(run, source)
    return float((out["log_probs"].argmax(1) == out["labels"]).mean())


def quantize_run(workdir: str, scheme: str, calibration: int = 512, which: str = "best",
                 eval_examples: int = 0, repeats: int = 10) -> dict:
    """Writes WORKDIR/quantized/<scheme>/ (the int8 variables, meta.json, table.json) and
    returns the table: float and int8 top-1 on the first `eval_examples` of the eval split
    (0: all), parameter bytes, and ms per image at batch 1 and 32 on this machine."""
    schemes.check_scheme(scheme)
    run = evaluate.load_run(workdir, which)
    dataset = sources.create(evaluate.streaming_config(run.config))
    batches = calibration_batches(run, dataset.train, calibration, seed=run.config.seed)
    t0 = time.monotonic()
    model, variables = schemes.quantize(run.model, run.variables, scheme,
                                        run.config.image_size, batches)
    seconds = time.monotonic() - t0
    out = schemes.directory(workdir, scheme)
    meta = {"scheme": scheme, "source": run.step_dir, "image_size": run.config.image_size,
            "calibration_images": calibration if scheme == "w8a8_static" else 0,
            "quantize_seconds": round(seconds, 1)}
    schemes.save(out, variables, meta)
    qrun = dataclasses.replace(run, model=model, variables=variables, _predict_fns={})
    source = dataset.eval
    if eval_examples:
        source = sources.subset(source, np.arange(min(eval_examples, len(source))))
    rows = {}
    for name, r in (("float32", run), (scheme, qrun)):
        rows[name] = {"top1": top1(r, source), "param_bytes": schemes.nbytes(r.variables),
                      "ms_per_image_batch1": latency_ms(r, 1, repeats),
                      "ms_per_image_batch32": latency_ms(r, 32, repeats)}
        logging.info("%s: %s", name, rows[name])
    table = {**meta, "eval_examples": len(source), "rows": rows,
             "machine": f"{jax.devices()[0].platform}: {jax.devices()[0].device_kind}"}
    with open(os.path.join(out, "table.json"), "w") as f:
        json.dump(table, f, indent=2)
    return table


def markdown(table: dict) -> str:
    """The table as markdown rows."""
    lines = ["| model | top-1 | parameter MiB | ms/image, batch 1 | ms/image, batch 32 |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in table["rows"].items():
        lines.append(f"| {name} | {r['top1']:.4f} | {r['param_bytes'] / 2**20:.2f} | "
                     f"{r['ms_per_image_batch1']:.2f} | {r['ms_per_image_batch32']:.3f} |")
    return "\n".join(lines)
