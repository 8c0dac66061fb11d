"""LeNet-5 (LeCun et al. 1998) in Flax Linen: the 32x32 layout C1 6@5x5 -> S2 -> C3 16@5x5 ->
S4 -> C5 120 -> F6 84 -> classes, tanh activations and 2x2 average-pool subsampling.

As modern reimplementations do, C3 connects to all six S2 maps (the paper's sparse table
saves 900 weights), subsampling has no trainable coefficients, the output layer is a Dense
`head` instead of Euclidean RBF units, and C5 (a 5x5 conv over the 5x5 S4 maps) is a Dense on
the flattened maps, which is the same function at 32x32. Parameters with 10 classes: 62,006
over RGB inputs (61,706 over grayscale).
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import classifier

Conv = partial(nn.Conv, padding="VALID", conv_general_dilated=conv_general_dilated)


class LeNet5(nn.Module):
    """LeNet-5: images NHWC float, 32x32 -> logits [N, num_classes] (float32)."""

    num_classes: int = 10
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.shape[1:3] != (32, 32):
            raise ValueError(f"LeNet-5 takes 32x32 images, got {x.shape[1]}x{x.shape[2]}")
        x = jnp.tanh(Conv(6, (5, 5), dtype=self.dtype, name="c1")(x.astype(self.dtype)))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = jnp.tanh(Conv(16, (5, 5), dtype=self.dtype, name="c3")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2)).reshape(x.shape[0], -1)
        x = jnp.tanh(nn.Dense(120, dtype=self.dtype, name="c5")(x))
        x = jnp.tanh(nn.Dense(84, dtype=self.dtype, name="f6")(x))
        return classifier(x, self.num_classes, 0.0, train, self.dtype)


MODELS = {"lenet5": LeNet5}
IMAGE_SIZE = {"lenet5": 32}
