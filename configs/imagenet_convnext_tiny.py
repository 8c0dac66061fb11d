"""ConvNeXt-T on ImageNet-1k (TFDS imagenet2012): the paper's AdamW recipe at 224, scaled to
batch 1024 (lr 4e-3 x 1024 / 4096), drop-path 0.1, EMA of the weights.

Data preparation as in configs/imagenet_resnet50.py, then:

    python -m jaxcls.main --config=configs/imagenet_convnext_tiny.py --workdir=runs/cnx_t \
        --config.data_dir=DIR

Augmentation as the paper: random-resized crop and flip, RandAugment (rand-m9-mstd0.5),
random erasing 0.25, mixup 0.8 / CutMix 1.0 (switch 0.5), label smoothing 0.1.
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
    config.augment = "random_resized_crop(224)|flip|randaugment(2, 9, 0.5)|erasing(0.25)"
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
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
