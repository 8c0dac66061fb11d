"""ConvNeXt-T on ImageNet-1k (TFDS imagenet2012): the paper's AdamW recipe at 224, scaled to
batch 1024 (lr 4e-3 x 1024 / 4096), drop-path 0.1, EMA of the weights.

Data preparation as in configs/imagenet_resnet50.py, then:

    python -m jaxcls.main --config=configs/imagenet_convnext_tiny.py --workdir=runs/cnx_t \
        --config.data_dir=DIR

The paper's 82.1% also needs RandAugment, mixup/cutmix and random erasing (the augmentation
issue); host preprocessing is resize + center crop for now.
Measured: not yet measured (no accelerator lent so far).
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "tfds:imagenet2012"
    config.tfds_eval_split = "validation"
    config.image_size = 224
    config.crop_frac = 0.875
    config.cache_max_gib = 0.0  # never hold ImageNet in host RAM
    config.num_workers = 8
    config.crop_padding = 0
    config.model = "convnext_tiny"
    config.drop_path_rate = 0.1
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 300
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.weight_decay = 0.05
    config.warmup_epochs = 20
    config.min_learning_rate = 1e-6
    config.label_smoothing = 0.1
    config.ema_decay = 0.9999
    config.eval_every_epochs = 1
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    return config
