"""Swin-T on ImageNet-1k (TFDS imagenet2012): the paper's and timm's recipe at 224 — AdamW lr
1e-3 at batch 1024, weight decay 0.05, 300 epochs with 20 of linear warmup then cosine, drop-path
0.2, gradient clipping at 5, no weight decay on the relative position bias tables.

Data preparation as in configs/imagenet_resnet50.py, then:

    python -m jaxcls.main --config=configs/imagenet_swin_tiny.py --workdir=runs/swin_t \
        --config.data_dir=DIR

Augmentation as the paper: random-resized crop and flip, RandAugment (rand-m9-mstd0.5),
random erasing 0.25, mixup 0.8 / CutMix 1.0 (switch 0.5), label smoothing 0.1; evaluated at
crop 0.875 (the paper's 224 / 256), bicubic resizing as timm.
Measured: not yet measured (no accelerator lent so far).
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "tfds:imagenet2012"  # ImageNet-1k from TFDS (array_record files)
    config.tfds_eval_split = "validation"  # the 50,000 validation images
    config.image_size = 224  # train and eval resolution
    config.crop_frac = 0.875  # eval center crop 224 of 256
    config.cache_max_gib = 0.0  # never hold ImageNet in host RAM
    config.num_workers = 8  # host decode processes
    # random-resized crop + flip, RandAugment 2 ops at magnitude 9 (std 0.5), erasing p=0.25
    config.augment = "random_resized_crop(224)|flip|randaugment(2, 9, 0.5)|erasing(0.25)"
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)  # timm's mixup
    config.model = "swin_tiny_patch4_window7_224"  # Swin-T, 28.29M params, 4.49 GMACs
    config.drop_path_rate = 0.2  # stochastic depth of the last block (Swin-T's 0.2)
    config.dtype = "bfloat16"  # compute dtype on accelerators (params stay float32)
    config.batch_size = 1024  # global batch
    config.num_epochs = 300  # paper: 300 epochs
    config.optimizer = "adamw"  # decoupled weight decay
    config.learning_rate = 1e-3  # peak lr at batch 1024
    config.weight_decay = 0.05  # AdamW weight decay (kernels; biases and norms never)
    config.wd_multipliers = ((r".*relative_position_bias_table", 0.0),)  # no decay, as timm
    config.warmup_epochs = 20  # linear warmup, then cosine
    config.min_learning_rate = 1e-5  # cosine floor (paper: 1e-5)
    config.grad_clip_norm = 5.0  # global-norm clipping (paper: 5.0)
    config.label_smoothing = 0.1  # on the (mixed) targets
    config.eval_every_epochs = 1  # validation accuracy every epoch
    config.log_every_steps = 100  # train metrics
    config.checkpoint_every_steps = 2500  # and on SIGTERM
    return config
