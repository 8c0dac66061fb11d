"""GoogLeNet (Szegedy et al. 2015) and Inception-v3 (Szegedy et al. 2016) as torchvision and
timm build them, in Flax Linen.

Conventions that parity depends on: every conv is conv (no bias) + BatchNorm (epsilon 1e-3) +
ReLU; GoogLeNet's max-pools use torch's ceil mode, and its "5x5" branch is a 3x3 conv, as in
torchvision; Inception-v3's branch pools are 3x3/1 average pools counting the zero padding.
`transform_input` re-normalises ImageNet-normalised inputs to [-1, 1] as torchvision does for
its ported Google weights (equivalently, feed mean = std = 0.5 inputs without it, which is
what checkpoints of this family declare). The auxiliary classifiers (torchvision's `aux1`,
`aux2`, `AuxLogits`) only act in training there; they are not built here and their tensors
in a checkpoint are ignored.

Parameters with 1000 classes: GoogLeNet 6,624,904 (1.50 GMACs at 224); Inception-v3
23,834,568 without AuxLogits (timm's figure; torchvision's 27,161,264 counts them), 5.71
GMACs at 299. Inception-v3 needs inputs of at least 75x75.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import classifier
from jaxcls.models.pooling import max_pool

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transform_input(x: jax.Array) -> jax.Array:
    """torchvision's `transform_input`: ImageNet-normalised -> (pixel - 0.5) / 0.5."""
    std, mean = jnp.asarray(IMAGENET_STD), jnp.asarray(IMAGENET_MEAN)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm (epsilon 1e-3) -> ReLU, torch's `BasicConv2d`."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: Any = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, self.kernel, self.strides, padding=self.padding,
                    use_bias=False, kernel_init=nn.initializers.truncated_normal(0.1),
                    dtype=self.dtype, conv_general_dilated=conv_general_dilated, name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3,
                         dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def _avg_pool3(x):
    """3x3/1 average pool, zero padding 1 counted in the mean (torch's count_include_pad)."""
    return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=True)


# ---- GoogLeNet ---------------------------------------------------------------------------------

class InceptionModule(nn.Module):
    """GoogLeNet's module: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3/1 max-pool -> 1x1, concatenated."""

    widths: Sequence[int]  # ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        b1, r3, c3, r5, c5, proj = self.widths
        conv = partial(BasicConv, dtype=self.dtype)
        branches = [
            conv(b1, name="branch1")(x, train),
            conv(c3, (3, 3), padding=1, name="branch2_1")(conv(r3, name="branch2_0")(x, train),
                                                          train),
            conv(c5, (3, 3), padding=1, name="branch3_1")(conv(r5, name="branch3_0")(x, train),
                                                          train),
            conv(proj, name="branch4_1")(max_pool(x, 3, 1, 1, ceil_mode=True), train),
        ]
        return jnp.concatenate(branches, axis=-1)


GOOGLENET = {  # name -> widths; a max-pool precedes 4a and 5a
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """GoogLeNet: images NHWC float -> logits [N, num_classes] (float32)."""

    num_classes: int = 1000
    dropout_rate: float = 0.2  # before the head
    transform_input: bool = False  # torchvision's re-normalisation (see the module docstring)
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(BasicConv, dtype=self.dtype)
        x = transform_input(x) if self.transform_input else x
        x = conv(64, (7, 7), 2, 3, name="conv1")(x.astype(self.dtype), train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = conv(64, name="conv2")(x, train)
        x = conv(192, (3, 3), padding=1, name="conv3")(x, train)
        x = max_pool(x, 3, 2, ceil_mode=True)
        for name, widths in GOOGLENET.items():
            if name == "inception4a":
                x = max_pool(x, 3, 2, ceil_mode=True)
            elif name == "inception5a":
                x = max_pool(x, 2, 2, ceil_mode=True)
            x = InceptionModule(widths, self.dtype, name=name)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return classifier(x, self.num_classes, self.dropout_rate, train, self.dtype)


# ---- Inception-v3 ------------------------------------------------------------------------------

class InceptionA(nn.Module):
    """35x35: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1 (pool_features)."""

    pool_features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(BasicConv, dtype=self.dtype)
        b1 = conv(64, name="branch1x1")(x, train)
        b5 = conv(48, name="branch5x5_1")(x, train)
        b5 = conv(64, (5, 5), padding=2, name="branch5x5_2")(b5, train)
        b3 = conv(64, name="branch3x3dbl_1")(x, train)
        b3 = conv(96, (3, 3), padding=1, name="branch3x3dbl_2")(b3, train)
        b3 = conv(96, (3, 3), padding=1, name="branch3x3dbl_3")(b3, train)
        bp = conv(self.pool_features, name="branch_pool")(_avg_pool3(x), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | 3x3/2 max-pool."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(BasicConv, dtype=self.dtype)
        b3 = conv(384, (3, 3), 2, name="branch3x3")(x, train)
        bd = conv(64, name="branch3x3dbl_1")(x, train)
        bd = conv(96, (3, 3), padding=1, name="branch3x3dbl_2")(bd, train)
        bd = conv(96, (3, 3), 2, name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(nn.Module):
    """17x17 with factorised 7x7s: 1x1 | 1x7, 7x1 | (7x1, 1x7) x 2 | avg-pool -> 1x1."""

    channels_7x7: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(BasicConv, dtype=self.dtype)
        c7 = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=((0, 0), (3, 3))), dict(
            kernel=(7, 1), padding=((3, 3), (0, 0)))
        b1 = conv(192, name="branch1x1")(x, train)
        b7 = conv(c7, name="branch7x7_1")(x, train)
        b7 = conv(c7, **row, name="branch7x7_2")(b7, train)
        b7 = conv(192, **col, name="branch7x7_3")(b7, train)
        bd = conv(c7, name="branch7x7dbl_1")(x, train)
        for i, (width, shape) in enumerate(((c7, col), (c7, row), (c7, col), (192, row))):
            bd = conv(width, **shape, name=f"branch7x7dbl_{i + 2}")(bd, train)
        bp = conv(192, name="branch_pool")(_avg_pool3(x), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17 -> 8 reduction: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | 3x3/2 max-pool."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(BasicConv, dtype=self.dtype)
        b3 = conv(192, name="branch3x3_1")(x, train)
        b3 = conv(320, (3, 3), 2, name="branch3x3_2")(b3, train)
        b7 = conv(192, name="branch7x7x3_1")(x, train)
        b7 = conv(192, (1, 7), padding=((0, 0), (3, 3)), name="branch7x7x3_2")(b7, train)
        b7 = conv(192, (7, 1), padding=((3, 3), (0, 0)), name="branch7x7x3_3")(b7, train)
        b7 = conv(192, (3, 3), 2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(nn.Module):
    """8x8 with split 3x3s: 1x1 | 1x1 -> (1x3 | 3x1) | 1x1 -> 3x3 -> (1x3 | 3x1) | avg -> 1x1."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = partial(BasicConv, dtype=self.dtype)
        row, col = dict(kernel=(1, 3), padding=((0, 0), (1, 1))), dict(
            kernel=(3, 1), padding=((1, 1), (0, 0)))
        b1 = conv(320, name="branch1x1")(x, train)
        b3 = conv(384, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate([conv(384, **row, name="branch3x3_2a")(b3, train),
                              conv(384, **col, name="branch3x3_2b")(b3, train)], axis=-1)
        bd = conv(448, name="branch3x3dbl_1")(x, train)
        bd = conv(384, (3, 3), padding=1, name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate([conv(384, **row, name="branch3x3dbl_3a")(bd, train),
                              conv(384, **col, name="branch3x3dbl_3b")(bd, train)], axis=-1)
        bp = conv(192, name="branch_pool")(_avg_pool3(x), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
    """Inception-v3: images NHWC float (299x299 native) -> logits [N, num_classes] (float32)."""

    num_classes: int = 1000
    dropout_rate: float = 0.5  # before the head
    transform_input: bool = False  # torchvision's re-normalisation (see the module docstring)
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = partial(BasicConv, dtype=self.dtype)
        x = transform_input(x) if self.transform_input else x
        x = conv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x.astype(self.dtype), train)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x, train)
        x = conv(64, (3, 3), padding=1, name="Conv2d_2b_3x3")(x, train)
        x = max_pool(x, 3, 2)
        x = conv(80, name="Conv2d_3b_1x1")(x, train)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x, train)
        x = max_pool(x, 3, 2)
        blocks = [InceptionA(32, self.dtype, name="Mixed_5b"),
                  InceptionA(64, self.dtype, name="Mixed_5c"),
                  InceptionA(64, self.dtype, name="Mixed_5d"),
                  InceptionB(self.dtype, name="Mixed_6a"),
                  InceptionC(128, self.dtype, name="Mixed_6b"),
                  InceptionC(160, self.dtype, name="Mixed_6c"),
                  InceptionC(160, self.dtype, name="Mixed_6d"),
                  InceptionC(192, self.dtype, name="Mixed_6e"),
                  InceptionD(self.dtype, name="Mixed_7a"),
                  InceptionE(self.dtype, name="Mixed_7b"),
                  InceptionE(self.dtype, name="Mixed_7c")]
        for block in blocks:
            x = block(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return classifier(x, self.num_classes, self.dropout_rate, train, self.dtype)


MODELS = {"googlenet": GoogLeNet, "inception_v3": InceptionV3}
IMAGE_SIZE = {"inception_v3": 299}
