"""RegNetY (Radosavovic et al. 2020) in Flax Linen, equal to timm 1.0.31 and transformers' RegNet.

A RegNet is a 3x3/2 stem (32 channels), four stages of bottleneck blocks and a linear head. The
per-block widths come from the paper's linear rule w_j = w0 + wa * j, quantised to powers of
wm (rounded to 8s); blocks of equal width form a stage. A Y block is 1x1 conv, 3x3 grouped conv
(stride 2 in a stage's first block; groups of `group_width` channels), squeeze-excite reduced
from the block's *input* channels (ratio 0.25, ReLU, sigmoid), 1x1 conv, then ReLU of the sum
with the shortcut (1x1/2 conv + BN where shapes differ). Bottleneck ratio 1 throughout.

Parameter names follow timm: `stem_conv`, `stem_bn`, `stage{S}_block{B}/conv{1,2,3}`,
`bn{1,2,3}`, `se`, `downsample_conv`, `downsample_bn`, and the classifier `head`. The convs,
BatchNorm and squeeze-excite are models/efficientnet.py's; grouped convs go through
models/conv.py's CPU path.
"""

import math
from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxcls.models.efficientnet import Settings, SqueezeExcite, _ops
from jaxcls.models.layers import DropPath, classifier, drop_path_rates


class Stage(NamedTuple):
    """One stage: `depth` blocks of `width` channels in groups of `group_width`."""

    depth: int
    width: int
    group_width: int


def stages_from_rule(w0: int, wa: float, wm: float, depth: int, group_width: int,
                     quant: int = 8) -> tuple[Stage, ...]:
    """The stages of the paper's (w0, wa, wm, depth) design, as timm and pycls generate them:
    block widths w0 * wm^round(log_wm((w0 + wa * j) / w0)) rounded to `quant`s, equal widths
    grouped into stages, each width then rounded to a multiple of its group width (itself at
    most the width)."""
    cont = np.arange(depth, dtype=np.float32) * np.float32(wa) + np.float32(w0)
    exps = np.round(np.log(cont / np.float32(w0)) / np.float32(math.log(wm)))
    widths = (np.round(w0 * np.power(np.float32(wm), exps) / quant) * quant).astype(int)
    values, counts = np.unique(widths, return_counts=True)
    out = []
    for w, d in zip(values.tolist(), counts.tolist(), strict=True):
        g = min(group_width, w)
        out.append(Stage(d, int(round(w / g) * g), g))
    return tuple(out)


class YBlock(nn.Module):
    """1x1, grouped 3x3 (strided), squeeze-excite, 1x1; ReLU after the residual sum."""

    width: int
    stride: int
    group_width: int
    se_ratio: float
    settings: Settings
    zero_init_last_bn: bool = True
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        ops = _ops(self.settings, train, "")
        c_in, w = x.shape[-1], self.width
        y = ops.act(ops.norm(name="bn1")(ops.conv(w, name="conv1")(x)))
        y = ops.conv(w, 3, self.stride, groups=w // self.group_width, name="conv2")(y)
        y = ops.act(ops.norm(name="bn2")(y))
        if self.se_ratio:
            y = SqueezeExcite(int(round(c_in * self.se_ratio)), "relu", "sigmoid",
                              self.settings.dtype, name="se")(y)
        last_gamma = nn.initializers.zeros if self.zero_init_last_bn else nn.initializers.ones
        y = ops.norm(scale_init=last_gamma, name="bn3")(ops.conv(w, name="conv3")(y))
        if c_in != w or self.stride != 1:
            x = ops.norm(name="downsample_bn")(ops.conv(w, 1, self.stride,
                                                        name="downsample_conv")(x))
        return ops.act(DropPath(self.drop_path_rate)(y, train) + x)


class RegNet(nn.Module):
    """RegNetY classifier: images NHWC float -> logits [N, num_classes]."""

    stages: Sequence[Stage]
    num_classes: int = 1000
    se_ratio: float = 0.25  # squeeze-excite width as a fraction of each block's input (0: X)
    stem_channels: int = 32
    stem_stride: int = 2  # 1 for 32x32 images (CIFAR), which would otherwise end at 1x1
    zero_init_last_bn: bool = True  # zero gamma of each block's last BN (timm's default)
    drop_path_rate: float = 0.0  # stochastic depth of the last block, linear from 0 (timm's)
    head_dropout_rate: float = 0.0  # dropout on the pooled features
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9  # flax convention (torch's 0.1)
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        settings = Settings("relu", "efficientnet", "symmetric", self.bn_eps, self.bn_momentum,
                            self.dtype)
        ops = _ops(settings, train, "")
        x = x.astype(self.dtype)
        x = ops.act(ops.norm(name="stem_bn")(ops.conv(self.stem_channels, 3, self.stem_stride,
                                                      name="stem_conv")(x)))
        rates = iter(drop_path_rates(self.drop_path_rate, sum(s.depth for s in self.stages)))
        for i, stage in enumerate(self.stages):
            for j in range(stage.depth):
                x = YBlock(stage.width, 2 if j == 0 else 1, stage.group_width, self.se_ratio,
                           settings, self.zero_init_last_bn, next(rates),
                           name=f"stage{i + 1}_block{j + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype)


# name: (w0, wa, wm, depth, group width), the paper's Table and timm's model_cfgs.
RULES = {
    "regnety_016": (48, 20.71, 2.65, 27, 24),
    "regnety_032": (80, 42.63, 2.66, 21, 24),
    "regnety_040": (96, 31.41, 2.24, 22, 64),
    "regnety_080": (192, 76.82, 2.19, 17, 56),
    "regnety_160": (200, 106.23, 2.48, 18, 112),
}


def regnet(name: str, **kwargs) -> RegNet:
    """The RegNetY `name` of RULES; kwargs override any RegNet field."""
    return RegNet(**{"stages": stages_from_rule(*RULES[name]), **kwargs})


MODELS = {name: partial(regnet, name) for name in RULES}


def checkpoint_conventions(model: str, layout: str) -> tuple[dict, dict]:
    """(model fields, preprocessing) of the published weights: timm evaluates RegNetY-1.6GF at
    crop 0.965 and the others at 0.95, bicubic, 224 (Hugging Face folders carry their own)."""
    return {}, {"crop_frac": 0.965 if model == "regnety_016" else 0.95,
                "interpolation": "bicubic", "image_size": 224}
