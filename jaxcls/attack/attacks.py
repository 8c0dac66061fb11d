"""The attacks by name, and one description of an attack (`Spec`) that the command, the tests
and adversarial training share."""

import dataclasses

import jax

from jaxcls.attack import apgd, pgd, threat
from jaxcls.attack.pgd import LogitsFn

ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr")
DEFAULT_STEPS = {"fgsm": 1, "pgd": 20, "apgd-ce": 100, "apgd-dlr": 100}


@dataclasses.dataclass(frozen=True)
class Spec:
    attack: str = "pgd"  # one of ATTACKS
    norm: str = "linf"  # linf | l2
    eps: float = 8 / 255  # radius of the ball in pixel units [0, 1]
    steps: int = 20  # iterations (fgsm: 1)
    step_size: float = 0.0  # pgd: 0 means 2.5 eps / steps; APGD chooses its own
    restarts: int = 1  # random restarts (pgd, apgd)
    random_start: bool = True  # pgd: start at a random point of the ball
    targeted: bool = False  # apgd: APGD-T over `target_classes` target classes
    target_classes: int = 9  # apgd targeted: the classes ranked 2nd, 3rd, ... (AutoAttack: 9)

    def check(self) -> "Spec":
        if self.attack not in ATTACKS:
            raise ValueError(f"--attack={self.attack!r}: use one of {ATTACKS}")
        threat.check_norm(self.norm)
        if self.eps < 0 or self.steps < 1 or self.restarts < 1 or self.step_size < 0:
            raise ValueError(f"eps={self.eps}, steps={self.steps}, restarts={self.restarts}, "
                             f"step_size={self.step_size}: eps and step_size >= 0, steps and "
                             f"restarts >= 1")
        if self.targeted and not self.attack.startswith("apgd"):
            raise ValueError(f"--targeted: only the APGD attacks are targeted, not "
                             f"{self.attack!r}")
        return self

    def describe(self) -> str:
        """e.g. 'APGD-T-DLR L-inf eps=0.0314, 100 steps, 9 targets x 1 restart'."""
        name = self.attack.upper()
        if self.targeted:
            name = name.replace("APGD-", "APGD-T-")
        norm = "L-inf" if self.norm == "linf" else "L2"
        if self.attack == "fgsm":
            return f"{name} {norm} eps={self.eps:.4g}"
        extra = f", {self.target_classes} targets" if self.targeted else ""
        return (f"{name} {norm} eps={self.eps:.4g}, {self.steps} steps{extra}, "
                f"{self.restarts} restart{'s' if self.restarts > 1 else ''}")


def run(spec: Spec, logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array
        ) -> jax.Array:
    """Adversarial images for `x` (pixels in [0, 1]) under `spec`."""
    if spec.attack == "fgsm":
        return pgd.fgsm(logits_fn, x, labels, spec.eps, spec.norm)
    if spec.attack == "pgd":
        return pgd.pgd(logits_fn, x, labels, key, spec.eps, spec.steps,
                       spec.step_size or None, spec.norm, spec.restarts, spec.random_start)
    return apgd.apgd(logits_fn, x, labels, key, spec.eps, spec.steps, spec.norm,
                     spec.attack.removeprefix("apgd-"), spec.restarts, spec.targeted,
                     spec.target_classes)
