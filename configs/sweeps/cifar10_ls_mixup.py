"""Label smoothing (0 / 0.1) x mixup (off / alpha 0.8) on configs/cifar10_small.py, two seeds:
8 runs.

    python -m jaxcls.sweep --config=configs/cifar10_small.py \
        --sweep=configs/sweeps/cifar10_ls_mixup.py --workdir=runs/c10_ls_mixup
    python -m jaxcls.sweep summarize runs/c10_ls_mixup

Measured (2026-11-24, 2 CPU cores shared with other jobs), one epoch per run to fit a CPU:
the command above plus `--config.num_epochs=1 --config.eval_every_epochs=1`; 8 runs of
134-626 s. Table by `summarize` (mean +- sample std over the two seeds): in one epoch, mixup
costs 4-5 points of test accuracy and label smoothing changes nothing beyond the seed noise.

    | label_smoothing | mixup.mixup_alpha | runs | final_accuracy | best_accuracy | final_loss |
    | --- | --- | --- | --- | --- | --- |
    | 0.0 | 0.0 | 2/2 | 0.5460 ± 0.0090 | 0.5460 ± 0.0090 | 1.2533 ± 0.0168 |
    | 0.0 | 0.8 | 2/2 | 0.5030 ± 0.0049 | 0.5030 ± 0.0049 | 1.3934 ± 0.0210 |
    | 0.1 | 0.0 | 2/2 | 0.5520 ± 0.0111 | 0.5520 ± 0.0111 | 1.2575 ± 0.0228 |
    | 0.1 | 0.8 | 2/2 | 0.5010 ± 0.0009 | 0.5010 ± 0.0009 | 1.4323 ± 0.0160 |
"""

from jaxcls.sweep import axis, product


def get_sweep():
    return product(axis("label_smoothing", [0.0, 0.1]),
                   axis("mixup.mixup_alpha", [0.0, 0.8]),
                   axis("seed", [0, 1]))
