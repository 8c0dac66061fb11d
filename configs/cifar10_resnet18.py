"""The classic CIFAR-10 recipe: ResNet-18 (3x3 stem, no max-pool), crop + flip, AdamW, 100 epochs.

    python -m jaxcls.main --config=configs/cifar10_resnet18.py --workdir=runs/c10 \
        --config.dataset=folder:../shared/data/cifar10

Measured: accuracy not yet measured (needs a GPU: on 2 CPU cores one step takes 5-7 s, see
BENCHMARKS.md).
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "folder:../shared/data/cifar10"  # CIFAR-10 as JPEG files (see README)
    config.image_size = 32
    config.crop_padding = 4  # random crop 32 with 4-pixel zero padding
    config.flip = True
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
