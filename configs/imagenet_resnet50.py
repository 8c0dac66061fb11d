"""ResNet-50 on ImageNet-1k (TFDS imagenet2012): the Goyal et al. recipe, SGD + 5-epoch warm-up.

Prepare the data once (TensorFlow needed for this step only; place ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar in DIR/downloads/manual first):

    pip install -e ".[tf]"
    tfds build imagenet2012 --file_format=array_record --data_dir=DIR

then train:

    python -m jaxcls.main --config=configs/imagenet_resnet50.py --workdir=runs/r50 \
        --config.data_dir=DIR

Augmentation is the standard ImageNet transform: Inception-style random-resized crop (area
8-100%, aspect 3/4-4/3) to 224 at decode time and a horizontal flip; evaluation resizes the
shorter side to 256 and takes the centre 224 (crop_frac 0.875).
Measured: not yet measured.
"""

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = "tfds:imagenet2012"
    config.tfds_eval_split = "validation"  # 50,000 images
    config.image_size = 224
    config.crop_frac = 0.875  # resize 256, center crop 224
    config.cache_max_gib = 0.0  # never hold ImageNet in host RAM
    config.num_workers = 8  # grain decode processes per host
    config.augment = "random_resized_crop(224)|flip"
    config.model = "resnet50"
    config.model_kwargs.zero_init_last_bn = True
    config.dtype = "bfloat16"
    config.batch_size = 1024
    config.num_epochs = 90
    config.optimizer = "sgd"
    config.learning_rate = 0.4  # 0.1 x batch / 256
    config.momentum = 0.9
    config.nesterov = True
    config.weight_decay = 5e-5  # applied to kernels only, so lower than the usual 1e-4
    config.warmup_epochs = 5
    config.label_smoothing = 0.1
    config.eval_every_epochs = 1
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2500
    return config
