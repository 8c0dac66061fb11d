"""jaxcls's compiled train step beside timm's eager one: same model, batch, resolution, dtype,
AdamW and label smoothing, in one process, the two steps interleaved so that both see the same
machine load.

    python -m jaxcls.benchmark --vs_timm \
        --models=resnet50,vit_b16,convnext_tiny,resnet18_cifar,efficientnet_b0 [--steps=N]

Prints one line per model (ms per step, ratio jaxcls / timm) and, last, one JSON line.
"""

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls import defaults, metrics
from jaxcls.data import augment
from jaxcls.models import conv


@dataclasses.dataclass(frozen=True)
class Spec:
    """One comparison: jaxcls model (and kwargs) against timm model, at a batch and size."""
    model: str
    timm: str
    image_size: int
    batch: int
    num_classes: int = 1000
    model_kwargs: tuple = ()  # jaxcls model_kwargs as (key, value) pairs
    cifar_stem: bool = False  # timm side: ResNet stem as jaxcls's stem="cifar"
    timm_kwargs: tuple = ()  # timm.create_model keyword arguments as (key, value) pairs


SPECS = {
    "resnet50": Spec("resnet50", "resnet50", 224, 8),
    "vit_b16": Spec("vit_b16", "vit_base_patch16_224", 224, 8),
    "convnext_tiny": Spec("convnext_tiny", "convnext_tiny", 224, 8),
    "resnet18_cifar": Spec("resnet18", "resnet18", 32, 128, 10, (("stem", "cifar"),), True),
    "efficientnet_b0": Spec("efficientnet_b0", "efficientnet_b0", 224, 8),
    # One 16-wide ViT block at 32 px (15,882 parameters): the plumbing in seconds.
    "tiny": Spec("vit_ti16", "vit_tiny_patch16_224", 32, 4, 10,
                 (("width", 16), ("depth", 1), ("num_heads", 2), ("mlp_dim", 64)), False,
                 (("img_size", 32), ("embed_dim", 16), ("depth", 1), ("num_heads", 2))),
}

# The training recipe both sides share (timm's defaults for AdamW fine-tuning).
LEARNING_RATE, WEIGHT_DECAY, LABEL_SMOOTHING = 1e-3, 0.05, 0.1


def jaxcls_config(spec: Spec, dtype: str = "float32"):
    """The jaxcls config of `spec`: synthetic data, no augmentation, AdamW, label smoothing."""
    c = defaults.get_config()
    c.dataset = "synthetic"
    c.model = spec.model
    c.model_kwargs.update(dict(spec.model_kwargs))
    c.image_size, c.batch_size, c.num_classes = spec.image_size, spec.batch, spec.num_classes
    c.dtype = dtype
    c.augment = ""
    c.optimizer = "adamw"
    c.learning_rate, c.weight_decay = LEARNING_RATE, WEIGHT_DECAY
    c.label_smoothing = LABEL_SMOOTHING
    c.num_steps, c.warmup_steps = 10_000, 0
    return c


def normalized_images(config, images) -> np.ndarray:
    """The float images jaxcls's step computes from its uint8 batch (timm's input)."""
    return np.asarray(augment.normalize(images, config.mean, config.std, jnp.float32))


def num_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def rotated(items: list, i: int) -> list:
    """`items` rotated left by i (mod len): round i of an interleaved measurement."""
    i %= len(items)
    return items[i:] + items[:i]


def load_average() -> float:
    """The 1-minute load average (the machine is shared; figures are quoted beside it)."""
    return round(os.getloadavg()[0], 2)


def timm_variables(model, spec: Spec) -> dict:
    """The timm model's weights as jaxcls variables (through a .pth file and jaxcls.weights,
    the importer users run), so that both sides start from the same parameters."""
    from jaxcls import weights
    from jaxcls.bench import timm_step

    torch, _ = timm_step.import_timm()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "timm.pth")
        torch.save(model.state_dict(), path)
        _, variables = weights.load(path, spec.model, None, spec.image_size,
                                    **dict(spec.model_kwargs))
    return variables


def compare(spec: Spec, num_steps: int, warmup: int, dtype: str = "float32",
            library_convs: bool = False) -> dict:
    """Median ms per step of both, measured alternately step by step, and their ratio; both
    start from timm's random weights, and their first-step losses are reported (equal up to
    float rounding when the two are the same network). warmup >= 1 (that first step)."""
    from jaxcls import benchmark
    from jaxcls.bench import timm_step

    config = jaxcls_config(spec, dtype)
    model = timm_step.create_model(spec.timm, spec.num_classes, spec.cifar_stem,
                                   **dict(spec.timm_kwargs))
    paths = conv.library_convolutions() if library_convs else contextlib.nullcontext()
    with paths:  # the step is traced (so its convolutions chosen) while it compiles
        ours = benchmark.CompiledStep(config, timm_variables(model, spec))
    theirs = timm_step.TimmStep(
        model, normalized_images(config, ours.batch["image"]), np.asarray(ours.batch["label"]),
        LABEL_SMOOTHING, LEARNING_RATE, WEIGHT_DECAY, dtype)
    ours()
    theirs()  # the first step: both losses from the same weights on the same batch
    losses = {"jaxcls_loss": round(metrics.to_host(ours.last_metrics)["loss"], 5),
              "timm_loss": round(float(theirs.last_loss), 5)}
    for _ in range(warmup - 1):
        ours()
        theirs()
    times = {"jaxcls": [], "timm": []}
    for i in range(num_steps):
        # Alternating which goes first: torch's OpenMP threads spin for a while after a step
        # and slow whatever runs next on this 2-core machine.
        for name, step in rotated([("jaxcls", ours), ("timm", theirs)], i):
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    jaxcls_ms = round(1e3 * statistics.median(times["jaxcls"]), 1)
    timm_ms = round(1e3 * statistics.median(times["timm"]), 1)
    return {"model": spec.model, "timm_model": spec.timm, "image_size": spec.image_size,
            "batch": spec.batch, "dtype": dtype, "jaxcls_ms": jaxcls_ms, "timm_ms": timm_ms,
            "ratio": round(jaxcls_ms / timm_ms, 3), "compile_s": round(ours.compile_s, 1),
            "jaxcls_params": num_params(ours.state.params), "timm_params": theirs.num_params(),
            **losses, "steps": num_steps, "load_avg": load_average()}


def run(names: list[str], num_steps: int, warmup: int, dtype: str = "float32",
        library_convs: bool = False, specs: dict | None = None, echo=print) -> dict:
    """Every model of `names` (keys of `specs`, default SPECS) in turn; `echo` gets one line
    per model. Returns what the JSON line holds."""
    specs = SPECS if specs is None else specs
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ValueError(f"--models: unknown {unknown}; known: {sorted(specs)}")
    from jaxcls.bench import timm_step

    torch, timm = timm_step.import_timm()
    rows = []
    for name in names:
        row = dict(compare(specs[name], num_steps, warmup, dtype, library_convs), name=name)
        rows.append(row)
        echo(f"{name:16s} jaxcls {row['jaxcls_ms']:9.1f} ms  timm {row['timm_ms']:9.1f} ms  "
             f"jaxcls/timm {row['ratio']:.3f}  (load {row['load_avg']})")
    return {"vs_timm": rows, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "library_convs": library_convs, "jax": jax.__version__, "torch": torch.__version__,
            "timm": timm.__version__, "torch_threads": torch.get_num_threads(),
            "device_kind": jax.devices()[0].device_kind}


_YNN_ALL = ",".join(f"LIBRARY_FUSION_TYPE_{t}" for t in (
    "DOT", "ELTWISE", "REDUCE", "INDIVIDUAL_DOT", "INDIVIDUAL_CONVOLUTION"))
# XLA:CPU variants of jaxcls's step: name -> (compiler options, lax convolutions instead of
# models/conv.py's CPU paths). This jaxlib's default already hands dots and convolutions to
# YNNPACK (ynn_fusion_type individual_dot,individual_convolution).
CANDIDATES = {
    "default": ({}, False),
    "control": ({}, False),  # the default compiled again: the spread of the measurement
    "lax_convs": ({}, True),
    "ynn_off": ({"xla_cpu_experimental_ynn_fusion_type": ""}, False),
    "ynn_all": ({"xla_cpu_experimental_ynn_fusion_type": _YNN_ALL}, False),
    "onednn": ({"xla_cpu_use_onednn": True}, False),
    "fast_math": ({"xla_cpu_enable_fast_math": True}, False),
}


def _rel(m: dict, base: dict) -> float:
    return abs(m["grad_norm"] / base["grad_norm"] - 1.0)


def sweep_model(spec: Spec, num_steps: int, warmup: int, dtype: str = "float32",
                candidates: dict | None = None) -> dict:
    """Every candidate's step on one shared state, and timm's, interleaved step by step: ms,
    ratio to timm, and the first step's loss and gradient norm from the same state (a
    candidate that changes the numerics shows here)."""
    from jaxcls import benchmark
    from jaxcls.bench import timm_step

    candidates = CANDIDATES if candidates is None else candidates
    config = jaxcls_config(spec, dtype)
    model = timm_step.create_model(spec.timm, spec.num_classes, spec.cifar_stem,
                                   **dict(spec.timm_kwargs))
    ours = benchmark.CompiledStep(config, timm_variables(model, spec))
    theirs = timm_step.TimmStep(
        model, normalized_images(config, ours.batch["image"]), np.asarray(ours.batch["label"]),
        LABEL_SMOOTHING, LEARNING_RATE, WEIGHT_DECAY, dtype)
    steps, compile_s = {}, {}
    for name, (options, lax_convs) in candidates.items():
        with conv.library_convolutions() if lax_convs else contextlib.nullcontext():
            steps[name], compile_s[name] = ours.compile(options)
    start, first = jax.tree.map(jnp.copy, ours.state), {}
    for name, compiled in steps.items():
        ours.state = jax.tree.map(jnp.copy, start)
        ours(compiled)
        first[name] = metrics.to_host(ours.last_metrics)
    for _ in range(warmup):
        theirs()
        for compiled in steps.values():
            ours(compiled)
    times = {name: [] for name in ("timm", *steps)}
    runs = [("timm", theirs), *((n, lambda c=c: ours(c)) for n, c in steps.items())]
    for i in range(num_steps):
        for name, run_step in rotated(runs, i):  # each takes each place in turn
            t = time.perf_counter()
            run_step()
            times[name].append(time.perf_counter() - t)
    ms = {name: round(1e3 * statistics.median(ts), 1) for name, ts in times.items()}
    base = first["default"]
    return {"model": spec.model, "timm_model": spec.timm, "batch": spec.batch,
            "image_size": spec.image_size, "dtype": dtype, "timm_ms": ms["timm"],
            "load_avg": load_average(), "steps": num_steps, "candidates": {
                name: {"ms": ms[name], "ratio": round(ms[name] / ms["timm"], 3),
                       "compile_s": round(compile_s[name], 1),
                       "loss": round(first[name]["loss"], 6),
                       "grad_norm_rel_diff": float(f"{_rel(first[name], base):.2e}")}
                for name in steps}}


def sweep(names: list[str], num_steps: int, warmup: int, dtype: str = "float32",
          echo=print, candidates: list[str] | None = None) -> dict:
    """sweep_model for each of `names` with `candidates` (names in CANDIDATES; default all,
    "default" always first); one line per model and candidate."""
    chosen = {n: CANDIDATES[n] for n in ["default", *(c for c in candidates or CANDIDATES
                                                      if c != "default")]}
    rows = []
    for name in names:
        row = dict(sweep_model(SPECS[name], num_steps, warmup, dtype, chosen), name=name)
        rows.append(row)
        for cand, r in row["candidates"].items():
            echo(f"{name:16s} {cand:10s} {r['ms']:9.1f} ms  timm {row['timm_ms']:9.1f} ms  "
                 f"jaxcls/timm {r['ratio']:.3f}  loss {r['loss']:.6f}  "
                 f"|grad norm rel diff| {r['grad_norm_rel_diff']:.1e}  (load {row['load_avg']})")
    return {"xla_sweep": rows, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "jax": jax.__version__, "device_kind": jax.devices()[0].device_kind}


def profile(names: list[str], num_steps: int, dtype: str = "float32", echo=print,
            top: int = 12) -> dict:
    """jaxcls's step of each of `names`: ms per step by kind of XLA:CPU thunk (CPU time over
    both threads), the `top` kinds echoed."""
    from jaxcls import benchmark
    from jaxcls.bench import profile as prof

    rows = {}
    for name in names:
        step = benchmark.CompiledStep(jaxcls_config(SPECS[name], dtype))
        times = prof.op_times(step, num_steps)
        rows[name] = {"by_group": prof.grouped(times), "by_kind": times}
        echo(f"{name}: {sum(times.values()):.0f} ms of thunks per step; " + ", ".join(
            f"{k} {v:.0f}" for k, v in rows[name]["by_group"].items()) + "; top kinds: " +
            ", ".join(f"{k} {v:.0f}" for k, v in list(times.items())[:top]))
        del step
    return {"profile_ms": rows, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_avg": load_average()}
