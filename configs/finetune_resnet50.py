"""Fine-tune a pretrained ResNet-50 on your image folder: one epoch head-only, then the whole
network with discriminative learning rates (the head 10x, earlier stages less).

    python -m jaxcls.weights convert PATH/resnet-50 runs/r50_in1k --model=resnet50  # optional
    python -m jaxcls.main --config=configs/finetune_resnet50.py --workdir=runs/ft_r50 \
        --config.dataset=folder:PATH/my_images --config.init_from=PATH/resnet-50

init_from takes a Hugging Face folder (microsoft/resnet-50), a timm/torchvision .pth or
.safetensors, or a converted/jaxcls checkpoint; the head is replaced to fit your classes and
mean/std/crop come from the weights. The folder holds train/<class>/*.jpg and optionally
test/ or val/ (else 20% of train is held out).

Measured: not yet measured on real pretrained weights (none can be downloaded on the machines
this was written on); tests/test_transfer.py runs this schedule from an imported checkpoint.
"""

from ml_collections.config_dict import placeholder

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = placeholder(str)  # required: folder:PATH
    config.init_from = placeholder(str)  # required: the pretrained weights
    config.image_size = 224
    config.crop_frac = 0.875
    config.augment = "random_resized_crop|flip"  # Inception crop at decode time, then flip
    config.model = "resnet50"
    config.head_dropout_rate = 0.2
    config.batch_size = 64
    config.num_epochs = 10
    config.optimizer = "sgd"
    config.learning_rate = 0.01
    config.momentum = 0.9
    config.weight_decay = 1e-4
    config.warmup_epochs = 0.5
    config.label_smoothing = 0.1
    config.unfreeze_epochs = ((r"(?!head/).*", 1),)  # epoch 0: the new head only
    config.lr_multipliers = ((r"head/.*", 10.0), (r"stage4_.*", 1.0), (r"stage3_.*", 0.5),
                             (r".*", 0.25))
    config.eval_every_epochs = 1
    config.log_every_steps = 20
    return config
