"""AlexNet as torchvision builds it (Krizhevsky 2014's one-GPU variant: 64/192/384/256/256
channels, no local response normalisation, a 6x6 adaptive average pool) in Flax Linen.

The pooled map is flattened channel-major (as torch's `flatten` on NCHW), so torchvision's
first Linear loads unchanged. Parameters with 1000 classes: 61,100,840; 0.71 GMACs at 224.
Inputs need at least 63x63 pixels (three stride-2 pools after a stride-4 conv).
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxcls.models.conv import conv_general_dilated
from jaxcls.models.layers import classifier
from jaxcls.models.pooling import adaptive_avg_pool, flatten_nchw, max_pool

Conv = partial(nn.Conv, conv_general_dilated=conv_general_dilated)
FEATURES = ((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))
POOL_AFTER = (0, 1, 4)  # convs followed by a 3x3/2 max-pool


class AlexNet(nn.Module):
    """AlexNet: images NHWC float -> logits [N, num_classes] (float32)."""

    num_classes: int = 1000
    mlp_dim: int = 4096  # width of fc6 and fc7
    dropout_rate: float = 0.5  # before fc6 and before fc7
    dtype: Any = jnp.float32  # compute dtype; params stay float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        for i, (features, kernel, stride, pad) in enumerate(FEATURES):
            x = Conv(features, (kernel, kernel), stride, padding=pad, dtype=self.dtype,
                     name=f"conv{i + 1}")(x)
            x = nn.relu(x)
            if i in POOL_AFTER:
                x = max_pool(x, 3, 2)
        x = flatten_nchw(adaptive_avg_pool(x, 6))
        for name in ("fc6", "fc7"):
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(self.mlp_dim, dtype=self.dtype, name=name)(x))
        return classifier(x, self.num_classes, 0.0, train, self.dtype)


MODELS = {"alexnet": AlexNet}
