"""DenseNet-121/161/169/201 (Huang et al. 2017) as torchvision and timm build them, in Flax Linen.

Each dense layer is BN -> ReLU -> 1x1 conv (bn_size x growth) -> BN -> ReLU -> 3x3 conv
(growth), its output concatenated to its input; transitions are BN -> ReLU -> 1x1 conv halving
the channels -> 2x2/2 average pool; the last BatchNorm (`norm5`) is followed by a ReLU before
the global pool. Module names follow torchvision's (`denseblock1/denselayer1/norm1`), whose
old checkpoints spell them `norm.1`, `conv.2` (both load).

Parameters with 1000 classes: 121 7,978,856; 161 28,681,000; 169 14,149,480; 201 20,013,928.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import classifier
from jaxcls.models.pooling import max_pool

conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")  # torchvision's kaiming
Conv = partial(nn.Conv, use_bias=False, kernel_init=conv_init,
               conv_general_dilated=conv_general_dilated)


def _norm(train: bool, dtype, name: str):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        name=name)


class DenseLayer(nn.Module):
    """x -> concat(x, conv3x3(relu(bn(conv1x1(relu(bn(x)))))))."""

    growth_rate: int
    bn_size: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        y = nn.relu(_norm(train, self.dtype, "norm1")(x))
        y = Conv(self.bn_size * self.growth_rate, (1, 1), dtype=self.dtype, name="conv1")(y)
        y = nn.relu(_norm(train, self.dtype, "norm2")(y))
        y = Conv(self.growth_rate, (3, 3), padding=1, dtype=self.dtype, name="conv2")(y)
        y = nn.Dropout(self.dropout_rate, deterministic=not train)(y)
        return jnp.concatenate([x, y], axis=-1)


class DenseBlock(nn.Module):
    """`num_layers` dense layers, each adding growth_rate channels."""

    num_layers: int
    growth_rate: int
    bn_size: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(self.num_layers):
            x = DenseLayer(self.growth_rate, self.bn_size, self.dropout_rate, self.dtype,
                           name=f"denselayer{i + 1}")(x, train)
        return x


class Transition(nn.Module):
    """BN -> ReLU -> 1x1 conv to `features` -> 2x2/2 average pool."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.relu(_norm(train, self.dtype, "norm")(x))
        x = Conv(self.features, (1, 1), dtype=self.dtype, name="conv")(x)
        return nn.avg_pool(x, (2, 2), (2, 2))


class DenseNet(nn.Module):
    """DenseNet: images NHWC float -> logits [N, num_classes] (float32)."""

    block_sizes: Sequence[int] = (6, 12, 24, 16)  # dense layers per block
    num_classes: int = 1000
    growth_rate: int = 32  # channels each dense layer adds
    init_features: int = 64  # channels of the stem conv
    bn_size: int = 4  # bottleneck width, in multiples of growth_rate
    dropout_rate: float = 0.0  # after each dense layer's 3x3 conv (torchvision's drop_rate)
    head_dropout_rate: float = 0.0  # on the pooled features, before the head
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Conv(self.init_features, (7, 7), 2, padding=3, dtype=self.dtype,
                 name="conv0")(x.astype(self.dtype))
        x = max_pool(nn.relu(_norm(train, self.dtype, "norm0")(x)), 3, 2, 1)
        for i, num_layers in enumerate(self.block_sizes):
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.dropout_rate,
                           self.dtype, name=f"denseblock{i + 1}")(x, train)
            if i < len(self.block_sizes) - 1:
                x = Transition(x.shape[-1] // 2, self.dtype, name=f"transition{i + 1}")(x, train)
        x = nn.relu(_norm(train, self.dtype, "norm5")(x))
        x = jnp.mean(x, axis=(1, 2))
        return classifier(x, self.num_classes, self.head_dropout_rate, train, self.dtype)


SIZES = {  # depth -> block sizes, growth rate, stem width
    121: ((6, 12, 24, 16), 32, 64),
    161: ((6, 12, 36, 24), 48, 96),
    169: ((6, 12, 32, 32), 32, 64),
    201: ((6, 12, 48, 32), 32, 64),
}


def densenet(depth: int, **kwargs) -> DenseNet:
    """DenseNet-`depth`; kwargs override any DenseNet field."""
    blocks, growth, stem = SIZES[depth]
    return DenseNet(**{"block_sizes": blocks, "growth_rate": growth, "init_features": stem,
                       **kwargs})


MODELS = {f"densenet{d}": partial(densenet, d) for d in SIZES}
