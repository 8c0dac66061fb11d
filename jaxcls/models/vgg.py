"""VGG-11/13/16/19 (Simonyan & Zisserman 2015), with and without BatchNorm, in Flax Linen.

Feature layers are named by their index in torchvision's and timm's `features` Sequential
(`features_0` conv, `features_1` BatchNorm or ReLU, ...), so both checkpoints map one to one.
Two heads, as the two libraries build them:
- torchvision (default): adaptive 7x7 average pool, channel-major flatten (torch's order, so
  the first Linear loads unchanged), Dense fc1 4096 -> ReLU -> dropout -> fc2 4096 -> ReLU ->
  dropout -> `head`.
- timm (`conv_head=True`): `pre_logits`, a 7x7 VALID conv fc1 (maps smaller than 7x7 are first
  average-pooled up to 7x7) and a 1x1 conv fc2, each with ReLU, global average pool, `head`.
  Equal to the torchvision head wherever the feature map is at most 7x7 (224 px and below).

Parameters with 1000 classes (torchvision): VGG-11 132,863,336 ... VGG-19-BN 143,678,248.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import classifier
from jaxcls.models.pooling import adaptive_avg_pool, flatten_nchw, max_pool

# torchvision's VGG init: kaiming_normal(fan_out) convs, N(0, 0.01) linears, zero biases.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
linear_init = nn.initializers.normal(0.01)
Conv = partial(nn.Conv, kernel_init=conv_init, conv_general_dilated=conv_general_dilated)

M = "M"  # a 2x2/2 max-pool
LAYERS = {
    11: (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    13: (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    16: (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),
    19: (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M,
         512, 512, 512, 512, M),
}


class ConvMlp(nn.Module):
    """timm's VGG `pre_logits`: fc1 (7x7 VALID conv) -> ReLU -> dropout -> fc2 (1x1 conv) ->
    ReLU, then the global average pool -> [N, features]."""

    mlp_dims: Sequence[int] = (4096, 4096)
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        size = max(7, x.shape[1]), max(7, x.shape[2])
        if size != x.shape[1:3]:  # keep the input at least 7x7, as timm does
            x = adaptive_avg_pool(x, size)
        x = nn.relu(Conv(self.mlp_dims[0], (7, 7), padding="VALID", kernel_init=linear_init,
                         dtype=self.dtype, name="fc1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.relu(Conv(self.mlp_dims[1], (1, 1), kernel_init=linear_init, dtype=self.dtype,
                         name="fc2")(x))
        return jnp.mean(x, axis=(1, 2))


class VGG(nn.Module):
    """VGG: images NHWC float -> logits [N, num_classes] (float32)."""

    layers: Sequence[int | str] = LAYERS[16]  # conv widths, "M" for a max-pool
    num_classes: int = 1000
    batch_norm: bool = False  # BatchNorm after every conv (the _bn variants)
    conv_head: bool = False  # timm's convolutional pre_logits instead of torchvision's Linears
    mlp_dims: Sequence[int] = (4096, 4096)  # widths of fc1 and fc2 (() : features -> head)
    pool_size: int = 7  # the Linear head's adaptive pool (1: global average, for small images)
    dropout_rate: float = 0.5  # after fc1 and after fc2
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.conv_head and len(self.mlp_dims) != 2:
            raise ValueError(f"VGG conv_head needs two mlp_dims (fc1, fc2), got {self.mlp_dims}")
        x = x.astype(self.dtype)
        index = 0  # position in torch's `features` Sequential
        for width in self.layers:
            if width == M:
                x = max_pool(x, 2, 2)
                index += 1
                continue
            x = Conv(width, (3, 3), padding=1, dtype=self.dtype, name=f"features_{index}")(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype, name=f"features_{index + 1}")(x)
            x = nn.relu(x)
            index += 3 if self.batch_norm else 2
        if self.conv_head:
            x = ConvMlp(self.mlp_dims, self.dropout_rate, self.dtype, name="pre_logits")(x, train)
        else:
            x = flatten_nchw(adaptive_avg_pool(x, self.pool_size))
            for i, dim in enumerate(self.mlp_dims):
                x = nn.relu(nn.Dense(dim, kernel_init=linear_init, dtype=self.dtype,
                                     name=f"fc{i + 1}")(x))
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return classifier(x, self.num_classes, 0.0, train, self.dtype, kernel_init=linear_init)


def vgg(depth: int, batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-`depth` (11, 13, 16, 19); kwargs override any VGG field."""
    return VGG(**{"layers": LAYERS[depth], "batch_norm": batch_norm, **kwargs})


MODELS = {f"vgg{d}{'_bn' if bn else ''}": partial(vgg, d, bn)
          for d in LAYERS for bn in (False, True)}
