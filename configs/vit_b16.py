"""ViT-B/16 on ImageNet-1k (TFDS imagenet2012), the DeiT-style AdamW recipe at 224.

ViT arrives with the models issue; until then this config loads, validates and stops with a
clear message when it builds the model. Data preparation as in configs/imagenet_resnet50.py.

    python -m jaxcls.main --config=configs/vit_b16.py --workdir=runs/vit_b16 \
        --config.data_dir=DIR --config.batch_size=1024

Measured: not yet measured.
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
    config.mean = (0.5, 0.5, 0.5)  # inputs in [-1, 1], as the AugReg ViTs
    config.std = (0.5, 0.5, 0.5)
    config.model = "vit_b16"
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 300
    config.optimizer = "adamw"
    config.learning_rate = 1e-3  # 5e-4 x batch / 512
    config.weight_decay = 0.05
    config.b2 = 0.999
    config.warmup_epochs = 5
    config.min_learning_rate = 1e-5
    config.label_smoothing = 0.1
    config.grad_clip_norm = 1.0
    config.eval_every_epochs = 1
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    return config
