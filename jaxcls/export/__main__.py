"""python -m jaxcls.export: see jaxcls/export/__init__.py."""

from absl import app, flags

from jaxcls import cli, evaluate, writers
from jaxcls.export import build


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    meta = build.export_run(f.workdir, f.out, f.checkpoint, f.ema, f.tta,
                            tuple(p for p in f.platforms.split(",") if p),
                            f.verify_examples, f.tolerance, f.min_top1_agreement, f.format,
                            f.quantized)
    check = meta["verification"]
    print(f"wrote {f.out} ({meta['format']}): {meta['source']['checkpoint']}; max |Δprob| "
          f"{check['max_abs_diff']:.3g}, top-1 agreement {check['top1_agreement']:.4f} on "
          f"{check['examples']} eval examples")


if __name__ == "__main__":
    evaluate.define_run_flags(ensemble=False, quantized=True)
    flags.DEFINE_string("out", None, "output directory (model.jax, metadata.json)")
    flags.DEFINE_enum("format", "jax", list(build.FORMATS), "jax: jax.export serialized "
                      "StableHLO; savedmodel: a TF SavedModel and a TFLite file (jax2tf, needs "
                      "the tf extra); onnx: jax2onnx (the onnx extra)")
    flags.DEFINE_string("platforms", ",".join(build.PLATFORMS), "comma-separated lowering "
                        "platforms of --format=jax: cpu, cuda, rocm, tpu")
    flags.DEFINE_integer("verify_examples", 1000, "eval examples the artifact is checked on "
                         "against the original model (0: the whole eval split)")
    flags.DEFINE_float("tolerance", None, "largest allowed |Δprob| in the check (default "
                       "1e-4; 1e-2 with --quantized, where int8 rounding may flip)")
    flags.DEFINE_float("min_top1_agreement", 0.999, "smallest allowed top-1 agreement")
    flags.mark_flags_as_required(["out"])
    cli.run(main)
