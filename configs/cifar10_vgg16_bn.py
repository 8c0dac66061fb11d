"""CIFAR-10 from scratch: VGG-16 with BatchNorm, its 13 convs as torchvision builds them, and for
32x32 images a global average pool into the 10-way head instead of the 7x7 pool and two
4096-wide Linears (15M parameters instead of 134M). SGD with Nesterov momentum, cosine
schedule, crop + flip, 100 epochs.

    python -m jaxcls.main --config=configs/cifar10_vgg16_bn.py --workdir=runs/c10_vgg16 \
        --config.dataset=folder:../shared/data/cifar10

Measured: not yet measured (meant for a GPU: 0.31 GMACs per 32x32 image, so about 94 TFLOPs
per epoch forward and backward).
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "folder:../shared/data/cifar10"  # CIFAR-10 as JPEG files (see README)
    config.image_size = 32
    config.augment = "crop(4)|flip"  # random crop 32 from the 4-pixel zero-padded image, flip
    config.mean = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics
    config.std = (0.2470, 0.2435, 0.2616)
    config.model = "vgg16_bn"
    config.model_kwargs.pool_size = 1  # global average pool: the 32x32 input ends at 1x1
    config.model_kwargs.mlp_dims = ()  # no fc1/fc2: 512 features -> head
    config.batch_size = 128
    config.num_epochs = 100
    config.optimizer = "sgd"
    config.momentum = 0.9
    config.nesterov = True
    config.learning_rate = 0.05
    config.weight_decay = 5e-4
    config.warmup_epochs = 1  # then cosine to min_learning_rate
    config.label_smoothing = 0.0
    config.eval_every_epochs = 5
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    return config
