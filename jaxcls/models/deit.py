"""DeiT (Touvron et al. 2021), equal to timm 1.0.31's `deit_*` models.

The plain DeiTs are ViTs (models/vit.py) with ImageNet mean/std, LayerNorm eps 1e-6 and exact
GELU. The distilled ones add a distillation token after the class token and a second classifier
`head_dist` on it: in eval (and by default in training, as timm's fine-tuning) the logits are the
mean of both heads. For a distillation trainer, `distillation_output=True` makes
`apply(..., train=True)` return (class-token logits, distillation-token logits), the first for
the labels and the second for the teacher (hard or soft distillation).

Fine-tuning and transfer: `head_dist` is a classifier like `head`. `jaxcls.weights.fit` (and
`config.init_from` in training) keeps both from a checkpoint of the same classes and replaces
both with fresh ones for other classes (or with `init_new_head`); freeze / lr-multiplier
regexes written `head.*` cover both (`(?!head/).*` freezes `head_dist` too: write
`(?!head).*` for a linear probe of a distilled DeiT).
"""

from functools import partial

import flax.linen as nn

from jaxcls.models import vit
from jaxcls.models.layers import classifier


class DistilledViT(vit.ViT):
    """ViT with class and distillation tokens and a head on each: images NHWC float ->
    logits [N, num_classes] float32 (the mean of both heads); with `distillation_output` and
    train=True, the pair (head logits, head_dist logits)."""

    distillation_output: bool = False  # train=True returns both heads' logits (distillation)

    @property
    def prefix_tokens(self) -> tuple[str, ...]:
        return ("cls", "dist_token")

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.pool != "token" or self.representation_size:
            raise ValueError("a distilled DeiT pools its class and distillation tokens (pool="
                             "'token', no representation layer)")
        x = self.encode(x, train)
        head = partial(classifier, num_classes=self.num_classes,
                       dropout_rate=self.head_dropout_rate, train=train, dtype=self.dtype,
                       kernel_init=nn.initializers.zeros)
        logits, dist = head(x[:, 0], name="head"), head(x[:, 1], name="head_dist")
        if train and self.distillation_output:
            return logits, dist
        return (logits + dist) / 2


SIZES = {"tiny": "ti", "small": "s", "base": "b"}  # DeiT size -> vit.SIZES key

def deit(size: str, distilled: bool = False, patch_size: int = 16, **kwargs) -> vit.ViT:
    """DeiT-`size` (tiny, small, base): a ViT, or with `distilled` a DistilledViT; kwargs
    override any field."""
    return vit.vit(SIZES[size], patch_size, DistilledViT if distilled else vit.ViT, **kwargs)


MODELS = {f"deit_{size}{'_distilled' if d else ''}_patch16_224": partial(deit, size, d)
          for d in (False, True) for size in SIZES}


def checkpoint_conventions(model: str, layout: str) -> tuple[dict, dict]:
    """(model fields, preprocessing) of DeiT checkpoints: timm's LayerNorm eps 1e-6 (Hugging
    Face's 1e-12), ImageNet mean/std, crop 0.9 (HF: 0.875), bicubic resizing at 224."""
    if layout == "hf":
        return {"layer_norm_eps": 1e-12}, {"crop_frac": 0.875, "interpolation": "bicubic",
                                           "image_size": 224}
    return {}, {"crop_frac": 0.9, "interpolation": "bicubic", "image_size": 224}
