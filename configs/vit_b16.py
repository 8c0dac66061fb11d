"""ViT-B/16 on ImageNet-1k (TFDS imagenet2012): the DeiT-style AdamW recipe at 224.

Augmentation as DeiT / timm: random-resized crop and flip, RandAugment (rand-m9-mstd0.5: 2 ops,
magnitude 9, std 0.5), random erasing 0.25, mixup 0.8 / CutMix 1.0 (switch 0.5), label
smoothing 0.1 folded into the mixed targets.

Data preparation as in configs/imagenet_resnet50.py, then:

    python -m jaxcls.main --config=configs/vit_b16.py --workdir=runs/vit_b16 \
        --config.data_dir=DIR --config.batch_size=1024

On a GPU use --config.attention=cudnn for the fused kernel.
Smoke test on any machine (synthetic data, a few steps):

    python -m jaxcls.main --config=configs/vit_b16.py --workdir=/tmp/vit_smoke \
        --config.dataset=synthetic --config.batch_size=4 --config.num_steps=3 \
        --config.dtype=float32 --config.num_workers=0 --config.log_every_steps=1

Measured: a full run is not yet measured (no accelerator lent so far); the smoke test trains
3 steps on 2 CPU cores (tests/test_configs.py).
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
    config.mean = (0.5, 0.5, 0.5)  # inputs in [-1, 1], as the AugReg ViTs
    config.std = (0.5, 0.5, 0.5)
    config.model = "vit_b16"
    config.drop_path_rate = 0.1
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 300
    config.optimizer = "adamw"
    config.learning_rate = 1e-3  # 5e-4 x batch / 512
    config.weight_decay = 0.05
    config.wd_multipliers = ((r"pos_embedding|cls", 0.0),)  # no decay on embeddings, as DeiT
    config.b2 = 0.999
    config.warmup_epochs = 5
    config.min_learning_rate = 1e-5
    config.label_smoothing = 0.1
    config.grad_clip_norm = 1.0
    config.ema_decay = 0.9999
    config.eval_every_epochs = 1
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    return config
