"""CIFAR-10 from scratch: RegNetY-1.6GF (timm's regnety_016: widths 48/120/336/888, 2/6/17/2
blocks, groups of 24, squeeze-excite) with a stride-1 stem for 32x32 images, so the last stage
works at 2x2 instead of 1x1 (10.3M parameters, 0.133 GMACs per image, from
`jaxcls.models.__main__.count`'s tracing with stem_stride=1, 2026-12-03). SGD with Nesterov
momentum, cosine schedule, crop + flip, 100 epochs, each block's last BN started at zero (timm's
zero_init_last).

    python -m jaxcls.main --config=configs/cifar10_regnety_016.py --workdir=runs/c10_regnety016 \
        --config.dataset=folder:../shared/data/cifar10

Measured: not yet measured.
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "folder:../shared/data/cifar10"  # CIFAR-10 as JPEG files (see README)
    config.image_size = 32
    config.augment = "crop(4)|flip"  # random crop 32 from the 4-pixel zero-padded image, flip
    config.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics
    config.std = (0.2470, 0.2435, 0.2616)
    config.model = "regnety_016"
    config.model_kwargs.stem_stride = 1  # 32x32 -> 32x32 stem, stages at 16, 8, 4, 2
    config.batch_size = 128
    config.num_epochs = 100
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.nesterov = True
    config.learning_rate = 0.1  # RegNet's 0.1 per 128 examples
    config.weight_decay = 5e-4
    config.warmup_epochs = 1  # then cosine to min_learning_rate
    config.label_smoothing = 0.0
    config.eval_every_epochs = 5
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
