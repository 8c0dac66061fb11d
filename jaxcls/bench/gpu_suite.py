"""The accelerator suite: every figure BENCHMARKS.md wants from one lent GPU, in one command.

    python -m jaxcls.benchmark --suite=gpu [--suite_out=rows.md] \
        [--suite_config=configs/cifar10_airbench.py] [--suite_data=../shared/data/cifar10]

Sized to finish in under 8 minutes on one H100/H200 (not yet run on one: no accelerator was lent
while it was written). Four tables, printed as BENCHMARKS.md-ready markdown (and written to
--suite_out), then one JSON line:

- step: ResNet-50, ViT-B/16, ConvNeXt-T at 224 in bfloat16, jaxcls's compiled step (ms, img/s,
  XLA's FLOPs, MFU) beside timm's step: `../shared/bench/timm_train_step.py` in a subprocess on
  a GPU (bf16 autocast, channels_last; `--suite_timm_compile` adds torch.compile), timm eager in
  this process elsewhere;
- loop: the CIFAR-10 ResNet-18 recipe, compiled step vs the full training loop, on synthetic
  data and on the JPEG folder;
- augment: that recipe's device augmentation (crop, flip, RandAugment, erasing, mixup/CutMix)
  as a share of its step (`benchmark.augment_cost`);
- config: a timed training run of --suite_config (wall time, test top-1); skipped, with the
  reason in its row, when the file does not exist.

`--tiny` runs the same plumbing with a small model, batch and step count, on any machine.
"""

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import jax

from jaxcls import benchmark, defaults, train
from jaxcls.bench import vs_timm

TIMM_SCRIPT = "../shared/bench/timm_train_step.py"


@dataclasses.dataclass
class Suite:
    """What the suite measures and how long it looks."""
    models: tuple  # vs_timm.Spec per step row
    dtype: str = "bfloat16"
    steps: int = 20  # timed steps per measurement (median)
    warmup: int = 3
    loop_config: str = "configs/cifar10_resnet18.py"  # loop and augment rows
    loop_batch: int = 512
    loop_steps: int = 40  # full-loop steps after its first log interval
    log_every: int = 10
    loop_overrides: tuple = ()  # (key, value) pairs applied to loop_config
    config_overrides: tuple = ()  # (key, value) pairs applied to the timed config run
    timm_compile: bool = False
    timm_script: str = TIMM_SCRIPT  # timm's GPU step script (copy it where ../shared is absent)


def gpu_suite() -> Suite:
    """The real suite: batch 256 at 224 for the step rows (what timm's script uses)."""
    return Suite(models=tuple(dataclasses.replace(vs_timm.SPECS[n], batch=256)
                              for n in ("resnet50", "vit_b16", "convnext_tiny")))


def tiny_suite() -> Suite:
    """The same plumbing in seconds on a CPU: vs_timm's one-block ViT, a two-stage 8-wide
    ResNet on digits for the loop and augment rows."""
    return Suite(models=(vs_timm.SPECS["tiny"],), dtype="float32", steps=2, warmup=1,
                 loop_config="configs/default.py", loop_batch=8, loop_steps=2, log_every=1,
                 loop_overrides=(("model_kwargs", {"width": 8, "stage_sizes": (1, 1)}),
                                 ("image_size", 16), ("num_threads", 1),
                                 ("augment", "crop(2)|flip|randaugment(2, 9, 0.5)")),
                 config_overrides=(("num_steps", 2), ("log_every_steps", 1)))


def _configured(path: str, overrides: tuple, **more):
    config = defaults.load_config(path)
    for key, value in (*overrides, *more.items()):
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    return config


def mfu(flops: float | None, step_ms: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: XLA's FLOPs per step / step time / the device's peak."""
    if not (flops and peak):
        return None
    return round(flops / (step_ms / 1e3) / peak, 4)


def timm_row(spec: vs_timm.Spec, suite: Suite, ours: benchmark.CompiledStep,
             config) -> dict:
    """timm's step ms for `spec`: its own script on a GPU, timm eager in this process on a CPU."""
    if jax.default_backend() == "gpu":
        if not os.path.isfile(suite.timm_script):
            return {"timm_ms": None, "timm": f"skipped: {suite.timm_script} not found"}
        cmd = [sys.executable, suite.timm_script, "--model", spec.timm, "--batch", str(spec.batch),
               "--size", str(spec.image_size), "--classes", str(spec.num_classes),
               "--steps", str(suite.steps), "--warmup", str(suite.warmup)]
        cmd += [] if suite.timm_compile else ["--no-compile"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"timm_ms": None, "timm": "failed: " + proc.stderr.strip()[-200:]}
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"timm_ms": out["step_ms"],
                "timm": "timm_train_step.py" + (" compiled" if suite.timm_compile else "")}
    from jaxcls.bench import timm_step

    theirs = timm_step.TimmStep(
        timm_step.create_model(spec.timm, spec.num_classes, spec.cifar_stem,
                               **dict(spec.timm_kwargs)),
        vs_timm.normalized_images(config, ours.batch["image"]), ours.batch["label"],
        vs_timm.LABEL_SMOOTHING, vs_timm.LEARNING_RATE, vs_timm.WEIGHT_DECAY, suite.dtype)
    return {"timm_ms": round(benchmark.median_ms(theirs, suite.steps, suite.warmup), 2),
            "timm": "eager, in process"}


def step_rows(suite: Suite, peak: float | None) -> list[dict]:
    rows = []
    for spec in suite.models:
        config = vs_timm.jaxcls_config(spec, suite.dtype)
        ours = benchmark.CompiledStep(config)
        ms = round(benchmark.median_ms(ours, suite.steps, suite.warmup), 2)
        row = {"model": spec.model, "dtype": suite.dtype, "batch": spec.batch,
               "image_size": spec.image_size, "step_ms": ms,
               "img_per_s": round(spec.batch * 1e3 / ms, 1), "flops_per_step": ours.flops,
               "mfu": mfu(ours.flops, ms, peak), "compile_s": round(ours.compile_s, 1)}
        row.update(timm_row(spec, suite, ours, config))
        row["ratio"] = round(ms / row["timm_ms"], 3) if row["timm_ms"] else None
        rows.append(row)
        del ours
    return rows


def loop_rows(suite: Suite, data: str) -> list[dict]:
    rows = []
    for dataset in ("synthetic", f"folder:{data}"):
        config = _configured(suite.loop_config, suite.loop_overrides, dataset=dataset,
                             batch_size=suite.loop_batch, num_workers=0)
        r = benchmark.run(config, suite.steps, suite.warmup, suite.loop_steps, suite.log_every)
        rows.append({"config": suite.loop_config, "dataset": dataset, "batch": suite.loop_batch,
                     "step_ms": r["step_ms"], "loop_step_ms": r["loop_step_ms"],
                     "loop_over_step": r["loop_over_step"]})
    return rows


def augment_rows(suite: Suite) -> list[dict]:
    config = _configured(suite.loop_config, suite.loop_overrides, batch_size=suite.loop_batch)
    r = benchmark.augment_cost(config, suite.steps, suite.warmup)
    keep = ("augment", "step_ms", "step_ms_no_augment", "augment_ms", "augment_fraction",
            "augment_alone_ms")
    return [{"config": suite.loop_config, "batch": suite.loop_batch,
             **{k: r[k] for k in keep}}]


def config_rows(suite: Suite, path: str) -> list[dict]:
    if not os.path.isfile(path):
        return [{"config": path, "skipped": f"{path} does not exist (yet)"}]
    config = _configured(path, suite.config_overrides)
    with tempfile.TemporaryDirectory() as workdir:
        t = time.perf_counter()
        summary = train.run(config, workdir)
        wall = time.perf_counter() - t
    final = summary["final_eval"] or {}
    return [{"config": path, "steps": summary["steps"], "wall_s": round(wall, 1),
             "accuracy": final.get("accuracy"), "loop_step_ms": summary["loop_step_ms"]}]


TABLES = {  # section -> (title, [(column header, row key)])
    "step": ("compiled train step beside timm's", [
        ("model", "model"), ("dtype", "dtype"), ("batch", "batch"), ("jaxcls ms", "step_ms"),
        ("img/s", "img_per_s"), ("FLOP/step (XLA)", "flops_per_step"), ("MFU", "mfu"),
        ("timm ms", "timm_ms"), ("timm", "timm"), ("jaxcls / timm", "ratio")]),
    "loop": ("full loop vs compiled step", [
        ("config", "config"), ("data", "dataset"), ("batch", "batch"),
        ("compiled step ms", "step_ms"), ("full loop ms", "loop_step_ms"),
        ("loop / step", "loop_over_step")]),
    "augment": ("device augmentation cost", [
        ("config", "config"), ("batch", "batch"), ("augment", "augment"),
        ("step ms", "step_ms"), ("step ms, no augment", "step_ms_no_augment"),
        ("augment share", "augment_fraction"), ("augment alone ms", "augment_alone_ms")]),
    "config": ("timed config run", [
        ("config", "config"), ("steps", "steps"), ("wall s", "wall_s"),
        ("test top-1", "accuracy"), ("loop ms/step", "loop_step_ms"), ("skipped", "skipped")]),
}


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.4e}"
    return str(value).replace("|", "\\|")


def markdown(results: dict, header: str) -> str:
    """BENCHMARKS.md-ready tables of `results` (section -> rows), under `header`."""
    out = [header, ""]
    for section, (title, columns) in TABLES.items():
        if section not in results:
            continue
        out += [f"{title}:", "", "| " + " | ".join(h for h, _ in columns) + " |",
                "|" + " --- |" * len(columns)]
        out += ["| " + " | ".join(_cell(r.get(k)) for _, k in columns) + " |"
                for r in results[section]]
        out.append("")
    return "\n".join(out)


SECTIONS = ("step", "loop", "augment", "config")


def run(suite: Suite, config_path: str, data: str, peak: float | None = None,
        echo=print, sections: tuple = SECTIONS) -> dict:
    """The `sections` (default all four); `peak` FLOP/s overrides the device table (MFU)."""
    device = jax.devices()[0].device_kind
    peak = peak or benchmark.peak_flops(device)
    results, seconds = {}, {}
    for section, measure in (("step", lambda: step_rows(suite, peak)),
                             ("loop", lambda: loop_rows(suite, data)),
                             ("augment", lambda: augment_rows(suite)),
                             ("config", lambda: config_rows(suite, config_path))):
        if section not in sections:
            continue
        t = time.perf_counter()
        results[section] = measure()
        seconds[section] = round(time.perf_counter() - t, 1)
        echo(f"{section}: {seconds[section]} s")
    header = (f"Device: {device} x{jax.device_count()}, JAX {jax.__version__}, "
              f"{datetime.date.today().isoformat()}; `python -m jaxcls.benchmark "
              f"{' '.join(sys.argv[1:])}`; {sum(seconds.values()):.0f} s in all.")
    return {"device_kind": device, "peak_flops": peak, "seconds": seconds,
            "markdown": markdown(results, header), **results}
