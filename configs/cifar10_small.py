"""A small ResNet (one basic block per stage, 16-32-64-128 channels) for CIFAR-10 on a CPU.

    python -m jaxcls.main --config=configs/cifar10_small.py --workdir=runs/c10_small \
        --config.dataset=folder:../shared/data/cifar10

Measured (2026-11-23, 2 CPU cores, this command with the folder at /work/shared/data/cifar10):
71.3% test top-1 after 4 epochs, 10 min 38 s wall including decoding the 60,000 JPEGs into
memory (~30 s); 2 epochs: 60.0%.
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "folder:../shared/data/cifar10"  # CIFAR-10 as JPEG files (see README)
    config.image_size = 32
    config.augment = "crop(4)|flip"  # random crop 32 from the 4-pixel zero-padded image, flip
    config.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics
    config.std = (0.2470, 0.2435, 0.2616)
    config.model = "resnet18"
    config.model_kwargs.stage_sizes = (1, 1, 1, 1)  # a ResNet-10: one block per stage
    config.model_kwargs.width = 16
    config.model_kwargs.stem = "cifar"
    config.batch_size = 256  # XLA:CPU convolutions run more efficiently on bigger batches
    config.num_epochs = 4
    config.optimizer = "adamw"
    config.learning_rate = 4e-3
    config.weight_decay = 0.05
    config.warmup_epochs = 0.5
    config.label_smoothing = 0.1
    config.eval_every_epochs = 2
    config.log_every_steps = 50
    return config
