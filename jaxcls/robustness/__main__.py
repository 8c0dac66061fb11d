"""python -m jaxcls.robustness --workdir=W [--corruptions=all] [--severities=1,2,3,4,5]
[--baseline=W2] [--split=test]: see jaxcls/robustness/benchmark.py."""

from absl import app, flags

from jaxcls import cli, evaluate, writers
from jaxcls.robustness import benchmark, corruptions


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    benchmark.benchmark(f.workdir, corruptions.parse_names(f.corruptions),
                        benchmark.parse_severities(f.severities), f.baseline, f.split,
                        f.checkpoint, f.seed, f.out_dir, ema=f.ema)


if __name__ == "__main__":
    evaluate.define_run_flags(ensemble=False, tta=False)
    flags.DEFINE_string("corruptions", "all", "all (the 15 of CIFAR-10-C / ImageNet-C), extra "
                        "(speckle_noise, gaussian_blur, spatter, saturate), everything, or "
                        "comma-separated names")
    flags.DEFINE_string("severities", "1,2,3,4,5", "comma-separated severities in 1..5")
    flags.DEFINE_string("baseline", None, "run directory of the baseline for CE and mCE")
    flags.DEFINE_enum("split", "test", ["test", "val", "train"], "the split to corrupt")
    flags.DEFINE_integer("seed", 0, "seed of the corruptions' randomness")
    flags.DEFINE_string("out_dir", None, "default: WORKDIR/eval/<split>_corruptions")
    cli.run(main)
