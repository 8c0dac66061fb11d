"""Knowledge distillation on CIFAR-10: a narrow ResNet-10 (8-16-32-64 channels) learns from a
trained configs/cifar10_small.py teacher (16-128 channels) with Hinton's KL loss.

    python -m jaxcls.main --config=configs/cifar10_small.py --workdir=runs/c10_teacher \\
        --config.num_epochs=3
    python -m jaxcls.main --config=configs/cifar10_distill.py --workdir=runs/c10_student \\
        --config.distill.teacher=runs/c10_teacher
    # the same student alone, for comparison:
    python -m jaxcls.main --config=configs/cifar10_distill.py --workdir=runs/c10_alone \\
        --config.distill.teacher=

Measured (2026-12-03, 2-core AMD EPYC CPU, shared; with --config.dataset=folder:/work/shared/
data/cifar10): teacher 67.9% after 3 epochs; this student distilled from it 59.6% / 60.7%
(seeds 0 / 1), the same student alone 56.6% / 57.8%, both after 2 epochs (390 steps); ~20 min
wall distilled, ~15 min alone on the loaded machine. Table: jaxcls/distill/__init__.py.
"""

import os

from ml_collections.config_dict import placeholder

from jaxcls import defaults


def get_config():
    config = defaults.load_config(os.path.join(os.path.dirname(__file__), "cifar10_small.py"))
    config.model_kwargs.width = 8  # a quarter of the teacher's convolution FLOPs
    config.num_epochs = 2
    config.eval_every_epochs = 1
    config.distill.teacher = placeholder(str)  # --config.distill.teacher=WORKDIR ("": no teacher)
    config.distill.loss = "kl"  # Hinton et al. 2015
    config.distill.alpha = 0.9  # 0.9 on the teacher's soft targets, 0.1 on the labels
    config.distill.temperature = 4.0
    config.distill.teacher_view = "same"  # the teacher sees the student's augmented view
    return config

