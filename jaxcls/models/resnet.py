"""ResNet v1.5 (He et al. 2016; stride on the 3x3 of the bottleneck, as torchvision) in Flax Linen.

Parameter layout follows torchvision, so counts match the published ones
(ResNet-18 11,689,512; ResNet-50 25,557,032 with 1000 classes).
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import DropPath, classifier, drop_path_rates

# torchvision initialises convs with kaiming_normal(fan_out) and BN with scale 1, bias 0.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
Conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init,
               conv_general_dilated=conv_general_dilated)


def _conv_norm(dtype, train: bool):
    """The conv and BatchNorm constructors every block uses (torchvision's BN settings)."""
    conv = partial(Conv, dtype=dtype)
    norm = partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                   dtype=dtype)
    return conv, norm


def _merge(x, y, conv, norm, strides: int):
    """relu(shortcut(x) + y), projecting x with a strided 1x1 conv + BN where shapes differ."""
    if x.shape != y.shape:
        x = norm(name="downsample_bn")(conv(y.shape[-1], (1, 1), strides,
                                            name="downsample_conv")(x))
    return nn.relu(x + y)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    filters: int
    strides: int = 1
    zero_init_last_bn: bool = False
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = _conv_norm(self.dtype, train)
        y = nn.relu(norm()(conv(self.filters, (3, 3), self.strides, padding=1)(x)))
        y = conv(self.filters, (3, 3), padding=1)(y)
        y = norm(scale_init=_last_gamma(self.zero_init_last_bn))(y)
        y = DropPath(self.drop_path_rate)(y, train)
        return _merge(x, y, conv, norm, self.strides)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, v1.5), 1x1 expand by 4 (ResNet-50/101/152)."""

    filters: int
    strides: int = 1
    zero_init_last_bn: bool = False
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv, norm = _conv_norm(self.dtype, train)
        y = nn.relu(norm()(conv(self.filters, (1, 1))(x)))
        y = nn.relu(norm()(conv(self.filters, (3, 3), self.strides, padding=1)(y)))
        y = conv(self.filters * 4, (1, 1))(y)
        y = norm(scale_init=_last_gamma(self.zero_init_last_bn))(y)
        y = DropPath(self.drop_path_rate)(y, train)
        return _merge(x, y, conv, norm, self.strides)


def _last_gamma(zero: bool):
    return nn.initializers.zeros if zero else nn.initializers.ones


class ResNet(nn.Module):
    """ResNet classifier: images NHWC float -> logits [N, num_classes].

    stem="imagenet": 7x7/2 conv + 3x3/2 max-pool. stem="cifar": one 3x3/1 conv, no pool.
    """

    stage_sizes: Sequence[int]
    block: str = "basic"  # "basic" | "bottleneck"
    num_classes: int = 1000
    width: int = 64  # channels of the first stage; doubled at each later stage
    stem: str = "imagenet"  # "imagenet" | "cifar"
    zero_init_last_bn: bool = False  # zero gamma of each block's last BN (Goyal et al. 2017)
    drop_path_rate: float = 0.0  # stochastic depth of the last block; linear from 0
    head_dropout_rate: float = 0.0  # on the pooled features, before the head
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.stem not in ("imagenet", "cifar"):
            raise ValueError(f"ResNet stem must be 'imagenet' or 'cifar', got {self.stem!r}")
        if self.block not in ("basic", "bottleneck"):
            raise ValueError(f"ResNet block must be 'basic' or 'bottleneck', got {self.block!r}")
        block_cls = BasicBlock if self.block == "basic" else Bottleneck
        x = x.astype(self.dtype)
        if self.stem == "imagenet":
            x = Conv(self.width, (7, 7), 2, padding=3, dtype=self.dtype, name="stem_conv")(x)
        else:
            x = Conv(self.width, (3, 3), 1, padding=1, dtype=self.dtype, name="stem_conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name="stem_bn")(x)
        x = nn.relu(x)
        if self.stem == "imagenet":
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        rates = iter(drop_path_rates(self.drop_path_rate, sum(self.stage_sizes)))
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                strides = 2 if i > 0 and j == 0 else 1
                x = block_cls(self.width * 2**i, strides, self.zero_init_last_bn, next(rates),
                              self.dtype, name=f"stage{i + 1}_block{j + 1}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype)


STAGE_SIZES = {
    18: ((2, 2, 2, 2), "basic"),
    34: ((3, 4, 6, 3), "basic"),
    50: ((3, 4, 6, 3), "bottleneck"),
    101: ((3, 4, 23, 3), "bottleneck"),
    152: ((3, 8, 36, 3), "bottleneck"),
}


def resnet(depth: int, **kwargs) -> ResNet:
    """ResNet-`depth` with the standard stage sizes; kwargs override any ResNet field."""
    stage_sizes, block = STAGE_SIZES[depth]
    return ResNet(**{"stage_sizes": stage_sizes, "block": block, **kwargs})


MODELS = {f"resnet{d}": partial(resnet, d) for d in STAGE_SIZES}
