"""Fine-tune a pretrained ViT-B/16 on your image folder: AdamW with layer-wise learning-rate
decay (0.75 per block from the head down), stochastic depth, an EMA of the weights.

    python -m jaxcls.main --config=configs/finetune_vit_b16.py --workdir=runs/ft_vit \
        --config.dataset=folder:PATH/my_images --config.init_from=PATH/vit-base-patch16-224

init_from: a Hugging Face folder (google/vit-base-patch16-224), a timm .pth/.safetensors, a
big_vision AugReg .npz, or a jaxcls checkpoint. Training at another resolution
(--config.image_size=384) resizes the position embedding; [-1, 1] inputs and the crop ratio
come from the weights.

Measured: not yet measured on real pretrained weights (none can be downloaded on the machines
this was written on); tests/test_transfer.py checks the parameter groups it builds.
"""

from ml_collections.config_dict import placeholder

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = placeholder(str)  # required: folder:PATH
    config.init_from = placeholder(str)  # required: the pretrained weights
    config.image_size = 224
    config.augment = "random_resized_crop|flip"  # Inception crop at decode time, then flip
    config.model = "vit_b16"
    config.drop_path_rate = 0.1
    config.head_dropout_rate = 0.1
    config.batch_size = 64
    config.num_epochs = 10
    config.optimizer = "adamw"
    config.learning_rate = 1e-4
    config.weight_decay = 0.05
    config.b2 = 0.999
    config.warmup_epochs = 1
    config.min_learning_rate = 1e-6
    config.label_smoothing = 0.1
    config.grad_clip_norm = 1.0
    config.layer_decay = 0.75
    config.wd_multipliers = ((r"pos_embedding|cls", 0.0),)
    config.ema_decay = 0.999
    config.eval_every_epochs = 1
    config.log_every_steps = 20
    return config
