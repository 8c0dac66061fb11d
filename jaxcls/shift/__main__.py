"""python -m jaxcls.shift --workdir=W --target=PATH [--target=PATH2 ...]: see
jaxcls/shift/__init__.py."""

from absl import app, flags

from jaxcls import cli, writers
from jaxcls.shift import detect


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    r = detect.run_shift(f.workdir, f.target, f.out_dir, f.checkpoint, f.train_examples,
                         f.eval_examples, f.keep, f.permutations, f.seed)
    flagged = ", ".join(f"{k} {v['flagged_target']:.1%}" for k, v in r["scores"].items())
    print(f"{r['target_images']} target images flagged: {flagged}; feature MMD p-value "
          f"{r['mmd']['p_value']:.4f}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "a jaxcls run directory", required=True)
    flags.DEFINE_multi_string("target", None, "unlabeled target image files or folders",
                              required=True)
    flags.DEFINE_string("checkpoint", "best", "best | last | a step number")
    flags.DEFINE_string("out_dir", None, "default: WORKDIR/shift/<target folder name>")
    flags.DEFINE_integer("train_examples", 10000, "training images the Mahalanobis fit uses")
    flags.DEFINE_integer("eval_examples", 10000, "eval images the thresholds and tests use")
    flags.DEFINE_float("keep", 0.95, "fraction of the eval split below each threshold")
    flags.DEFINE_integer("permutations", 200, "permutations of the MMD test")
    flags.DEFINE_integer("seed", 0, "seed of the samples and permutations")
    cli.run(main)
