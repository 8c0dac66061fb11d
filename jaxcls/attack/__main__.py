"""python -m jaxcls.attack --workdir=W --attack=pgd --norm=linf --eps=8/255 --steps=20
[--restarts=1] [--targeted] [--examples=N]: see jaxcls/attack/benchmark.py."""

from absl import app, flags

from jaxcls import cli, evaluate, writers
from jaxcls.attack import attacks, benchmark, threat


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    spec = attacks.Spec(attack=f.attack, norm=f.norm, eps=threat.parse_eps(f.eps),
                        steps=f.steps or attacks.DEFAULT_STEPS.get(f.attack, 1),
                        step_size=f.step_size, restarts=f.restarts,
                        random_start=f.random_start, targeted=f.targeted,
                        target_classes=f.target_classes)
    r = benchmark.attack_run(f.workdir, spec, f.eps, f.split, f.checkpoint, f.examples, f.seed,
                             f.batch_size, f.out_dir, ema=f.ema)
    print(f"{r['examples']} {r['split']} examples: clean {r['clean_accuracy']:.2%}, robust "
          f"{r['robust_accuracy']:.2%} under {spec.describe()} (max {spec.norm} norm "
          f"{r['perturbation']['max']:.6f})")


if __name__ == "__main__":
    evaluate.define_run_flags(ensemble=False, tta=False)
    flags.DEFINE_enum("attack", "pgd", list(attacks.ATTACKS), "the attack")
    flags.DEFINE_enum("norm", "linf", list(threat.NORMS), "threat model: linf | l2 ball")
    flags.DEFINE_string("eps", "8/255", "radius of the ball in pixel units [0, 1]: a number "
                        "or a fraction (8/255)")
    flags.DEFINE_integer("steps", 0, "iterations (0: fgsm 1, pgd 20, apgd 100)")
    flags.DEFINE_float("step_size", 0.0, "pgd step size (0: 2.5 eps / steps)")
    flags.DEFINE_integer("restarts", 1, "random restarts (pgd, apgd)")
    flags.DEFINE_bool("random_start", True, "pgd: start at a random point of the ball")
    flags.DEFINE_bool("targeted", False, "apgd: the targeted attack (APGD-T) over "
                      "--target_classes classes")
    flags.DEFINE_integer("target_classes", 9, "apgd --targeted: number of target classes "
                         "(the clean logits' 2nd, 3rd, ... ranked)")
    flags.DEFINE_integer("examples", 0, "attack a seeded random sample of this many examples "
                         "(0: the whole split)")
    flags.DEFINE_integer("batch_size", 0, "global batch (0: the run's)")
    flags.DEFINE_enum("split", "test", ["test", "val", "train"], "the split to attack")
    flags.DEFINE_integer("seed", 0, "seed of the random starts and of --examples' sample")
    flags.DEFINE_string("out_dir", None, "default: WORKDIR/eval/<split>_<attack>_<norm>_eps<eps>")
    cli.run(main)
