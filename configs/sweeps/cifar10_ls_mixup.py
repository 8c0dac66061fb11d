"""Label smoothing (0 / 0.1) x mixup (off / alpha 0.8) on configs/cifar10_small.py, two seeds:
8 runs.

    python -m jaxcls.sweep --config=configs/cifar10_small.py \
        --sweep=configs/sweeps/cifar10_ls_mixup.py --workdir=runs/c10_ls_mixup
    python -m jaxcls.sweep summarize runs/c10_ls_mixup

Measured: not yet (each run is ~11 min on 2 CPU cores, see configs/cifar10_small.py).
"""

from jaxcls.sweep import axis, product


def get_sweep():
    return product(axis("label_smoothing", [0.0, 0.1]),
                   axis("mixup.mixup_alpha", [0.0, 0.8]),
                   axis("seed", [0, 1]))
