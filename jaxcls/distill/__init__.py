"""Knowledge distillation: a frozen teacher inside the student's jitted train step.

    python -m jaxcls.main --config=configs/cifar10_distill.py --workdir=runs/student \\
        --config.distill.teacher=runs/teacher

`config.distill` (jaxcls/defaults.py) names the teacher (a jaxcls workdir or checkpoint,
weights `jaxcls.weights.load` reads as MODEL:PATH, or a comma-separated ensemble of them) and
the loss (`losses.LOSSES`: Hinton's `kl`, `hard` teacher labels, DeiT's distillation head
`deit`, big_vision's `function_matching`). The teacher runs in eval mode in the same jitted
step as the student, on the student's augmented view (`teacher_view="same"`) or on its own draw
of the augmentation (`"independent"`), its variables placed by the student's sharding rules
(replicated, or split by FSDP) and never differentiated (no optimizer state). In-training
evals add `teacher_agreement` (top-1 agreement of student and teacher) and `teacher_kl`
(KL(teacher || student) at T = 1) beside accuracy.

Resuming: the teacher is reloaded from its files, not written into the student's checkpoints
(a teacher is often many times the student's size, and evaluate/export read student checkpoints
unchanged). Its weights' fingerprint goes to WORKDIR/distill_teacher.json when the run starts; a
resumed run whose teacher reads differently (e.g. the teacher's workdir trained on and its best
checkpoint moved) fails rather than continuing with another teacher. Frozen and reloaded
identically, the teacher makes a resumed run equal an uninterrupted one (tests/test_distill.py).

Measured (2026-12-03, 2-core AMD EPYC CPU shared with other jobs, CIFAR-10 folder, test split
of 10,000): the teacher is configs/cifar10_small.py for 3 epochs (ResNet-10 at 16-128 channels,
309k parameters: 67.9%); the student is configs/cifar10_distill.py (8-64 channels, 78k
parameters), 2 epochs (390 steps of 256) either way, alone (`--config.distill.teacher=`) or
distilled (kl, alpha 0.9, T 4, the teacher on the student's view):

    | student (390 steps)  | seed 0 | seed 1 | mean  | agreement with teacher |
    |----------------------|--------|--------|-------|------------------------|
    | alone                | 56.6%  | 57.8%  | 57.2% | -                      |
    | distilled (kl)       | 59.6%  | 60.7%  | 60.2% | 74.3% / 77.4%          |

(top-1 at the last step, which was also the best of the two evals; commands in
configs/cifar10_distill.py; wall 14-15 min per student alone, 19-20 min distilled, on the
loaded machine.)
"""

import ml_collections

from jaxcls import defaults
from jaxcls.distill.losses import LOSSES, agreement, distillation_loss, kl_divergence
from jaxcls.distill.teacher import Teacher, check_same_teacher, load, parse_members

VIEWS = ("same", "independent")

__all__ = ["LOSSES", "VIEWS", "Teacher", "agreement", "check", "check_same_teacher",
           "distillation_loss", "enabled", "kl_divergence", "load", "parse_members"]


def enabled(config: ml_collections.ConfigDict) -> bool:
    return bool(config.distill.teacher)


def check(config: ml_collections.ConfigDict, model) -> None:
    """Fails on a config.distill key or value distillation cannot use, naming it; `model` is
    the student (for loss='deit')."""
    d = config.distill
    unknown = sorted(set(d.keys()) - set(defaults.get_config().distill.keys()))
    if unknown:
        raise ValueError(f"unknown config.distill key(s) {unknown}; valid keys are listed in "
                         f"jaxcls/defaults.py")
    if d.teacher is None:
        raise ValueError("this recipe leaves config.distill.teacher to the command line: pass "
                         "--config.distill.teacher=... ('' trains the student alone)")
    if not enabled(config):
        return
    if d.loss not in LOSSES:
        raise ValueError(f"config.distill.loss={d.loss!r}: use one of {LOSSES}")
    if d.teacher_view not in VIEWS:
        raise ValueError(f"config.distill.teacher_view={d.teacher_view!r}: use one of {VIEWS}")
    if not 0.0 <= d.alpha <= 1.0:
        raise ValueError(f"config.distill.alpha={d.alpha} must be in [0, 1]")
    if d.temperature <= 0:
        raise ValueError(f"config.distill.temperature={d.temperature} must be positive")
    if d.loss == "function_matching" and d.teacher_view != "same":
        raise ValueError("config.distill.loss='function_matching' matches the teacher on the "
                         "student's own view: set config.distill.teacher_view='same'")
    if config.task != "multiclass":
        raise ValueError(f"config.distill: distillation needs task='multiclass', not "
                         f"{config.task!r}")
    if d.loss == "deit" and not hasattr(model, "distillation_output"):
        raise ValueError(f"config.distill.loss='deit' needs a model with a distillation head "
                         f"(deit_*_distilled_*), not {config.model!r}")
    parse_members(d.teacher, d.teacher_layout)
