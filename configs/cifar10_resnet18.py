"""CIFAR-10: ResNet-18 (3x3 stem, no max-pool), AdamW, 100 epochs, with strong augmentation:
crop + flip, RandAugment (2 ops, magnitude 9, std 0.5), random erasing 0.25, mixup 0.8 /
CutMix 1.0 (switch 0.5) on label-smoothed targets.

    python -m jaxcls.main --config=configs/cifar10_resnet18.py --workdir=runs/c10 \
        --config.dataset=folder:../shared/data/cifar10

See the augmented training images: python -m jaxcls.augviz --config=configs/cifar10_resnet18.py
--out=grid.png

Measured: the full 100 epochs not yet (needs a GPU: on 2 CPU cores one step takes 5-7 s, see
BENCHMARKS.md). A short run of this recipe on the CIFAR-10 folder (2026-11-24, 2 CPU cores
shared with other jobs), the command above plus `--config.num_steps=100
--config.warmup_steps=10 --config.eval_every_steps=100`: 100 steps of 128 (a quarter epoch) in
13.5 min wall, train loss 2.48 (steps 1-10) -> 2.16 (steps 91-100) on the mixed targets,
37.4% test top-1.
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "folder:../shared/data/cifar10"  # CIFAR-10 as JPEG files (see README)
    config.image_size = 32
    # random crop 32 with 4-pixel zero padding, flip, RandAugment, then erasing (normalised image)
    config.augment = "crop(4)|flip|randaugment(2, 9, 0.5)|erasing(0.25)"
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    config.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics
    config.std = (0.2470, 0.2435, 0.2616)
    config.model = "resnet18"
    config.model_kwargs.stem = "cifar"  # 3x3/1 stem conv, no max-pool
    config.batch_size = 128
    config.num_epochs = 100
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.weight_decay = 0.05
    config.warmup_epochs = 5  # then cosine to min_learning_rate
    config.min_learning_rate = 1e-6
    config.label_smoothing = 0.1
    config.grad_clip_norm = 1.0
    config.eval_every_epochs = 5
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
