"""Fine-tune CLIP's ViT-B/16 image tower on your image folder from its zero-shot classifier,
with WiSE-FT evaluations (Wortsman et al. 2022): the head starts as CLIP's prompt-ensemble
classifier of the folder's class names, and every eval also scores the weights halfway between
the zero-shot and the current model (split eval_wise_ft_0.5) and the zero-shot model itself
(eval_wise_ft_0).

    python -m jaxcls.main --config=configs/finetune_clip_vit_b16.py --workdir=runs/ft_clip \
        --config.dataset=folder:PATH/my_images --config.init_from=PATH/ViT-B-16.pt

init_from: OpenAI's or open_clip's ViT-B-16 state dict (.pt, .pth, .bin, .safetensors) or a
Hugging Face CLIPModel folder (openai/clip-vit-base-patch16); CLIP's mean/std come from the
weights. Class names for the prompts: the folder's (underscores as spaces), or
--config.zeroshot_classes=a,b,c. The optimizer follows WiSE-FT's end-to-end fine-tuning
(AdamW, lr 3e-5, weight decay 0.1, cosine) at a smaller batch; the augmentation is jaxcls's.

Measured: not yet measured (no real CLIP weights can be downloaded on the machines this was
written on); tests/test_zeroshot.py runs the zero-shot head and WiSE-FT evaluations end to end
on a tiny model.
"""

from ml_collections.config_dict import placeholder

from jaxcls import defaults


def get_config():
    config = defaults.get_config()
    config.dataset = placeholder(str)  # required: folder:PATH
    config.init_from = placeholder(str)  # required: CLIP ViT-B/16 weights
    config.image_size = 224  # CLIP's resolution (its position embedding's)
    config.augment = "random_resized_crop|flip"  # Inception crop at decode time, then flip
    config.model = "clip_vit_b16"
    config.init_head = "zeroshot"  # start from CLIP's zero-shot classifier
    config.zeroshot_templates = "imagenet"  # CLIP's 80 generic photo templates
    config.wise_ft_alphas = (0.0, 0.5)  # zero-shot and halfway (alpha 1 is the plain eval)
    config.batch_size = 64
    config.num_epochs = 10
    config.optimizer = "adamw"
    config.learning_rate = 3e-5
    config.weight_decay = 0.1
    config.warmup_epochs = 1
    config.label_smoothing = 0.0
    config.grad_clip_norm = 1.0
    config.wd_multipliers = ((r"pos_embedding|cls", 0.0),)
    config.eval_every_epochs = 1
    config.log_every_steps = 20
    return config
