"""Fine-tune a pretrained EfficientNet-B0 on your image folder (the seeds' pick for mobile and
edge): one epoch head-only, then the whole network with AdamW, RandAugment and label
smoothing.

    python -m jaxcls.main --config=configs/finetune_efficientnet_b0.py --workdir=runs/ft_b0 \
        --config.dataset=folder:PATH/my_images --config.init_from=PATH/efficientnet_b0.pth

init_from takes timm's, torchvision's or lukemelas' (`efficientnet_pytorch`) checkpoints, .pth
or .safetensors; the head is replaced to fit your classes and mean/std/crop come from the
weights (`config.init_preprocessing`). For TensorFlow-ported weights use
`--config.model=tf_efficientnet_b0`.

Measured: not yet measured here (no EfficientNet-B0 weights are available offline on these
machines); configs/cifar10_efficientnet_lite0_finetune.py is the measured sibling with real
ImageNet EfficientNet-Lite0 weights (69.1% on CIFAR-10 at 96 px after a short CPU run).
"""

from ml_collections.config_dict import placeholder

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = placeholder(str)  # required: folder:PATH
    config.init_from = placeholder(str)  # required: the pretrained weights
    config.model = "efficientnet_b0"
    config.image_size = 224  # B0's native resolution
    config.crop_frac = 0.875
    config.augment = "random_resized_crop|flip|randaugment(2, 9, 0.5)"
    config.drop_path_rate = 0.2  # timm's B0 stochastic depth
    config.batch_size = 64
    config.num_epochs = 10
    config.optimizer = "adamw"
    config.learning_rate = 1e-3
    config.weight_decay = 0.01
    config.warmup_epochs = 0.5
    config.label_smoothing = 0.1
    config.unfreeze_epochs = ((r"(?!head/).*", 1),)  # epoch 0: the new head only
    config.lr_multipliers = ((r"head/.*", 10.0), (r".*", 1.0))
    config.eval_every_epochs = 1
    config.log_every_steps = 20
    return config
