"""Speed of a config: compiled train step alone vs the real training loop. One JSON line.

    python -m jaxcls.benchmark --config=configs/cifar10_resnet18.py [--config.k=v ...]
    python -m jaxcls.benchmark --input_only   # host input pipeline alone, see input_benchmark

- compiled step: the jitted train step on `synthetic` data already on device (median of
  --steps after --warmup), its compile time, and FLOPs from XLA's cost analysis;
- full loop: `train.run` itself on the configured dataset (data pipeline, host->device copies,
  logging), ms per step measured by the loop between log points, compilation excluded.
MFU = FLOPs per step / step time / the device's peak dense bf16 FLOP/s (null where unknown).

    python -m jaxcls.benchmark --vs_timm [--models=resnet50,vit_b16,...] [--steps=N]

times jaxcls's compiled step beside timm's eager one on the same batch (jaxcls.bench.vs_timm);

    python -m jaxcls.benchmark --suite=gpu [--tiny] [--suite_out=rows.md]

runs the accelerator suite (jaxcls.bench.gpu_suite) and prints BENCHMARKS.md rows.

    python -m jaxcls.benchmark --config=configs/cifar10_distill.py --config.distill.teacher=W

with a teacher, also times the same step without it (`step_ms_without_teacher`);

    python -m jaxcls.benchmark --config=configs/vit_b16.py --augment_cost [--config.k=v ...]

measures instead what the device augmentation costs (`augment_cost`): the compiled step with
the config's augment/mixup and with neither, on the same batch, and `augment.apply` alone.
"""

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from jaxcls import cli, distill, sharding, train, writers
from jaxcls.data import augment


def define_flags() -> None:
    """The command's flags (defined as its main runs, so importing this module defines
    none and other commands' flags never clash with them)."""
    config_flags.DEFINE_config_file("config", None, "A config file from configs/.",
                                    lock_config=True)
    flags.DEFINE_integer("steps", 10, "Timed compiled steps.")
    flags.DEFINE_integer("warmup", 2, "Untimed steps before timing.")
    flags.DEFINE_integer("loop_steps", 30,
                         "Steps of the full loop after its first log interval.")
    flags.DEFINE_integer("log_every", 10,
                         "Log interval of the full loop (its timing granularity).")
    flags.DEFINE_bool("input_only", False, "Only the host input pipeline: jaxcls.data."
                      "input_benchmark (grain vs a PIL loop vs tf.data); needs no --config.")
    flags.DEFINE_string("input_data", "../shared/data/cifar10",
                        "--input_only: CIFAR-10 JPEG folder (train/<class>/*.jpg).")
    flags.DEFINE_string("input_big", None,
                        "--input_only: folder for the 500x375 JPEGs, written on first use "
                        "(default: $XDG_CACHE_HOME/jaxcls/big_jpegs, i.e. ~/.cache/...).")
    flags.DEFINE_integer("input_images", 2000, "--input_only: images per measurement.")
    flags.DEFINE_integer("input_threads", 2, "--input_only: grain / tf.data threads.")
    flags.DEFINE_bool("vs_timm", False, "Instead: jaxcls's compiled step beside timm's eager "
                      "step for --models, interleaved (jaxcls.bench.vs_timm); needs no --config.")
    flags.DEFINE_list("models", ["resnet50", "vit_b16", "convnext_tiny", "resnet18_cifar",
                                 "efficientnet_b0"], "--vs_timm: models (jaxcls.bench.vs_timm."
                      "SPECS).")
    flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                      "--vs_timm: compute dtype of both (timm: autocast).")
    flags.DEFINE_bool("library_convs", False, "--vs_timm: lax convolutions instead of the CPU "
                      "paths of jaxcls.models.conv.")
    flags.DEFINE_enum("suite", "", ["", "gpu"], "gpu: the accelerator suite "
                      "(jaxcls.bench.gpu_suite): step beside timm, MFU, loop, augment, a run.")
    flags.DEFINE_bool("tiny", False, "--suite: a tiny model, batch and step count (plumbing).")
    flags.DEFINE_string("suite_config", "configs/cifar10_airbench.py",
                        "--suite: the config of its timed training run (skipped if missing).")
    flags.DEFINE_string("suite_data", "../shared/data/cifar10",
                        "--suite: JPEG folder (train/<class>/*.jpg) of the full-loop row.")
    flags.DEFINE_string("suite_out", "", "--suite: also write the markdown rows to this file.")
    flags.DEFINE_bool("suite_timm_compile", False,
                      "--suite on a GPU: timm's step under torch.compile (minutes more).")
    flags.DEFINE_string("suite_timm_script", "../shared/bench/timm_train_step.py",
                        "--suite on a GPU: timm's train-step script, run beside each model.")
    flags.DEFINE_float("peak_tflops", None, "--suite: peak FLOP/s (in TFLOP/s) for MFU, in "
                       "place of the device table (PEAK_FLOPS).")
    flags.DEFINE_bool("xla_sweep", False, "--vs_timm: each model's step also compiled with "
                      "each XLA:CPU option set and conv path of jaxcls.bench.vs_timm."
                      "CANDIDATES, all interleaved with timm in this one process.")
    flags.DEFINE_list("candidates", None, "--xla_sweep: these of CANDIDATES only (default all).")
    flags.DEFINE_bool("profile", False, "--vs_timm: instead, where jaxcls's step spends its "
                      "time, by kind of XLA:CPU thunk (jaxcls.bench.profile).")
    flags.DEFINE_bool("augment_cost", False, "Instead: the compiled train step with the config's "
                      "augmentation and with none, on the same synthetic batch (augment_cost()).")


# Peak dense bf16 FLOP/s per chip, from the vendors' data sheets.
PEAK_FLOPS = {
    "H100": 989e12, "H200": 989e12, "A100": 312e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}


def peak_flops(device_kind: str) -> float | None:
    return next((v for k, v in PEAK_FLOPS.items() if k.lower() in device_kind.lower()), None)


def synthetic_batch(config, mesh) -> dict:
    """A random uint8 batch of config.batch_size images (and labels, mask) on `mesh`."""
    n, s = config.batch_size, config.image_size
    return jax.device_put({
        "image": jax.random.randint(jax.random.key(1), (n, s, s, 3), 0, 256).astype(jnp.uint8),
        "label": jax.random.randint(jax.random.key(2), (n,), 0, config.num_classes),
        "mask": jnp.ones((n,), jnp.float32)}, sharding.batch_sharding(mesh))


class CompiledStep:
    """The jitted train step of `config`, compiled for a synthetic on-device batch; each call
    runs one step and waits for it (the benchmarks' unit of time). `last_metrics`: the last
    step's (its loss is that of the parameters before the step)."""

    def __init__(self, config, variables: dict | None = None):
        """`variables`: the model's starting params (and batch_stats), else a fresh init."""
        mesh = sharding.make_mesh(config.mesh)
        model, _, tx = train.create_model_and_optimizer(config, config.num_classes, 100, 10_000)
        init = train.state_initializer(config, model, tx)
        abstract_state = jax.eval_shape(init, jax.random.key(0))
        state_sharding = sharding.tree_shardings(mesh, abstract_state,
                                                 sharding.rules(config.sharding),
                                                 config.fsdp_min_size)
        self.model, self._build = model, (config, model, tx, mesh, abstract_state)
        self.state = jax.jit(lambda rng, v: init(rng, variables=v),
                             out_shardings=state_sharding)(jax.random.key(0), variables)
        self.batch = synthetic_batch(config, mesh)
        self.rng = jax.random.key(3)
        self.teacher, self.teacher_args = None, ()  # config.distill: its forward is in the step
        if distill.enabled(config):
            self.teacher, teacher_variables = distill.load(config, config.num_classes, mesh)
            self.teacher_args = (teacher_variables,)
        self.compiled, self.compile_s = self.compile()
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        self.flops = float(cost.get("flops", 0.0)) if cost else None
        self.last_metrics = None

    def compile(self, compiler_options: dict | None = None):
        """(executable, compile seconds): the step traced afresh (so under the convolution
        paths in force now, see models.conv) and compiled with XLA `compiler_options`
        (DebugOptions fields, as in XLA_FLAGS without the dashes); it takes and returns the
        same state, so variants can run in turn on one state."""
        config, model, tx, mesh, abstract_state = self._build
        _, train_step, _ = train.compile_steps(config, model, tx, mesh, abstract_state,
                                               10_000,  # lookahead needs a length
                                               self.teacher, *self.teacher_args)
        t = time.perf_counter()
        compiled = train_step.lower(self.state, self.batch, self.rng,
                                    *self.teacher_args).compile(compiler_options)
        return compiled, time.perf_counter() - t

    def __call__(self, compiled=None) -> None:
        """One step of `compiled` (default: the step as built)."""
        compiled = self.compiled if compiled is None else compiled
        self.state, self.last_metrics = compiled(self.state, self.batch, self.rng,
                                                 *self.teacher_args)
        jax.block_until_ready(self.state)


def median_ms(step, num_steps: int, warmup: int) -> float:
    """Median wall ms of `num_steps` calls of `step` after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(num_steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def time_compiled_step(config, num_steps: int, warmup: int) -> dict:
    """Compile time, FLOPs and median ms of the train step on synthetic on-device data."""
    step = CompiledStep(config)
    return {"compile_s": round(step.compile_s, 2),
            "step_ms": round(median_ms(step, num_steps, warmup), 2),
            "flops_per_step": step.flops}


def time_full_loop(config, loop_steps: int, log_every: int) -> dict:
    """ms per step of the real training loop (train.run) on the configured dataset."""
    config = config.copy_and_resolve_references()
    config.num_steps = log_every + loop_steps  # the first interval (compilation) is not timed
    config.log_every_steps = log_every
    config.eval_every_steps = None
    config.eval_every_epochs = None
    config.final_eval = False
    config.checkpoint_every_steps = 10**9  # only the final save, after the timed steps
    with tempfile.TemporaryDirectory() as workdir:
        summary = train.run(config, workdir)
    return {"loop_step_ms": round(summary["loop_step_ms"], 2), "dataset": config.dataset}


def run(config, num_steps: int = 10, warmup: int = 2, loop_steps: int = 30,
        log_every: int = 10) -> dict:
    """Both measurements and what follows from them, as one dict."""
    synthetic = config.copy_and_resolve_references()
    synthetic.dataset = "synthetic"
    result = {"model": config.model, "image_size": config.image_size, "dtype": config.dtype,
              "global_batch": config.batch_size,
              "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count()}
    result.update(time_compiled_step(synthetic, num_steps, warmup))
    if distill.enabled(config):  # what the teacher's forward adds: the same step without it
        alone = synthetic.copy_and_resolve_references()
        alone.distill.teacher = ""
        result["step_ms_without_teacher"] = time_compiled_step(alone, num_steps,
                                                               warmup)["step_ms"]
    if loop_steps > 0:
        result.update(time_full_loop(config, loop_steps, log_every))
        result["loop_over_step"] = round(result["loop_step_ms"] / result["step_ms"], 3)
    result["img_per_s"] = round(config.batch_size * 1e3 / result["step_ms"], 1)
    peak = peak_flops(result["device_kind"])
    result["mfu"] = (round(result["flops_per_step"] / (result["step_ms"] / 1e3) /
                           (peak * jax.device_count()), 4)
                     if peak and result["flops_per_step"] else None)
    return result


def augment_cost(config, num_steps: int = 10, warmup: int = 2) -> dict:
    """What the device augmentation costs: the compiled train step with config.augment and
    config.mixup, the same step with neither (augment="", mixup off), and `augment.apply`
    alone, all on the same synthetic batch in one run; the augmentation's share of the step."""
    synthetic = config.copy_and_resolve_references()
    synthetic.dataset = "synthetic"
    plain = synthetic.copy_and_resolve_references()
    plain.augment = ""
    plain.mixup.update(mixup_alpha=0.0, cutmix_alpha=0.0, cutmix_minmax=())
    result = {"model": config.model, "image_size": config.image_size, "dtype": config.dtype,
              "global_batch": config.batch_size, "device_kind": jax.devices()[0].device_kind,
              "device_count": jax.device_count(), "augment": config.augment,
              "mixup": config.mixup.to_dict()}
    augmented = time_compiled_step(synthetic, num_steps, warmup)
    bare = time_compiled_step(plain, num_steps, warmup)

    pipeline = augment.from_config(synthetic)
    batch = synthetic_batch(config, sharding.make_mesh())
    apply = jax.jit(lambda r: augment.apply(pipeline, r, batch["image"], batch["label"],
                                            config.num_classes, jnp.dtype(config.dtype)))
    calls = iter(range(10**9))
    augment_alone_ms = median_ms(lambda: jax.block_until_ready(apply(
        jax.random.key(next(calls)))), num_steps, 1)

    result.update({
        "step_ms": augmented["step_ms"], "step_ms_no_augment": bare["step_ms"],
        "compile_s": augmented["compile_s"], "compile_s_no_augment": bare["compile_s"],
        "augment_ms": round(augmented["step_ms"] - bare["step_ms"], 2),
        "augment_fraction": round(1.0 - bare["step_ms"] / augmented["step_ms"], 4),
        "augment_alone_ms": round(augment_alone_ms, 2),
    })
    result["augment_alone_fraction"] = round(result["augment_alone_ms"] / result["step_ms"], 4)
    return result


def main(argv):
    del argv
    writers.quiet_libraries()
    f = flags.FLAGS
    if f.input_only:
        from jaxcls.data import input_benchmark

        big = f.input_big or input_benchmark.default_big_dir()
        print(json.dumps(input_benchmark.run(f.input_data, big, f.input_images,
                                             f.input_threads)), flush=True)
        return
    if f.vs_timm:
        from jaxcls.bench import vs_timm

        echo = lambda line: print(line, flush=True)  # noqa: E731
        if f.profile:
            print(json.dumps(vs_timm.profile(f.models, f.steps, f.dtype, echo)), flush=True)
            return
        if f.xla_sweep:
            result = vs_timm.sweep(f.models, f.steps, f.warmup, f.dtype, echo, f.candidates)
        else:
            result = vs_timm.run(f.models, f.steps, f.warmup, f.dtype, f.library_convs,
                                 echo=echo)
        print(json.dumps(result), flush=True)
        return
    if f.suite:
        # timm's script runs in a subprocess on the same GPU: JAX must not take 75% of its
        # memory up front (read when the backend starts, which no code above has done).
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        from jaxcls.bench import gpu_suite

        suite = gpu_suite.tiny_suite() if f.tiny else gpu_suite.gpu_suite()
        suite.timm_compile, suite.timm_script = f.suite_timm_compile, f.suite_timm_script
        result = gpu_suite.run(suite, f.suite_config, f.suite_data,
                               f.peak_tflops * 1e12 if f.peak_tflops else None,
                               echo=lambda line: print(line, flush=True))
        print(result["markdown"], flush=True)
        if f.suite_out:
            with open(f.suite_out, "w") as out:
                out.write(result["markdown"])
        print(json.dumps(result), flush=True)
        return
    if f.config is None:
        raise app.UsageError("--config is required (or --input_only)")
    if f.augment_cost:
        print(json.dumps(augment_cost(f.config, f.steps, f.warmup)), flush=True)
        return
    print(json.dumps(run(f.config, f.steps, f.warmup, f.loop_steps, f.log_every)), flush=True)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
