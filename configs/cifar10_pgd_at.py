"""PGD adversarial training (Madry et al. 2018) of configs/cifar10_small.py's ResNet-10 on
CIFAR-10, sized for a CPU: at width 8 (78,002 parameters), 3 PGD steps of 2.5 eps / 3 in the
L-inf ball of radius 8/255 on every batch, 100 steps of 256 (half an epoch).

    python -m jaxcls.main --config=configs/cifar10_pgd_at.py --workdir=runs/c10_pgd_at
    python -m jaxcls.attack --workdir=runs/c10_pgd_at --attack=pgd --eps=8/255 --steps=20 \
        --examples=500

Measured (2026-12-03, 2-core AMD EPYC CPU shared with other jobs, load average 12-15, the
command above): 24.83% clean test top-1 in 1,877 s wall; on a seeded sample of 500 test images,
23.40% clean and 16.40% under PGD-20 (L-inf 8/255), against 41.00% and 0.20% for the same
network trained plainly for the same 100 steps (BENCHMARKS.md).
"""

import os

from jaxcls import defaults


def get_config():
    config = defaults.load_config(os.path.join(os.path.dirname(__file__), "cifar10_small.py"))
    config.adversarial.method = "pgd"  # PGD-AT: train on the attacked batch alone
    config.adversarial.norm = "linf"  # the CIFAR-10 L-inf threat model of RobustBench
    config.adversarial.eps = 8 / 255  # its radius
    config.adversarial.steps = 3  # few steps: each adds a forward and backward pass
    config.adversarial.step_size = 0.0  # 2.5 eps / steps (Madry et al.'s rule)
    config.model_kwargs.width = 8  # 8-64 channels: a quarter of cifar10_small.py's compute
    config.num_steps = 100  # half an epoch: each step costs ~4 plain ones (3 attack passes)
    config.warmup_steps = 20  # a fifth of the run, linear from 0
    config.eval_every_epochs = None  # evaluated at the end
    return config
