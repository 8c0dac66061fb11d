"""PyTorch's pooling semantics on NHWC arrays: ceil-mode max pooling and adaptive average
pooling, as the classic CNNs (AlexNet, VGG, GoogLeNet) use them."""

import flax.linen as nn
import jax
import jax.numpy as jnp


def _ceil_extra(size: int, window: int, stride: int, pad: int) -> int:
    """Extra high-side padding that makes a pool's output ceil((size + 2 pad - window) / stride)
    + 1 long, less one when the last window would start in the padding (torch's rule)."""
    out = -(-(size + 2 * pad - window) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return max(0, (out - 1) * stride + window - size - 2 * pad)


def max_pool(x: jax.Array, window: int, stride: int, pad: int = 0, ceil_mode: bool = False
             ) -> jax.Array:
    """torch.nn.MaxPool2d(window, stride, pad, ceil_mode) on [N, H, W, C] (padding is -inf)."""
    extra = [_ceil_extra(x.shape[d], window, stride, pad) if ceil_mode else 0 for d in (1, 2)]
    return nn.max_pool(x, (window, window), (stride, stride),
                       ((pad, pad + extra[0]), (pad, pad + extra[1])))


def _bins(size: int, out: int) -> jax.Array:
    """[out, size] averaging weights of torch's adaptive pooling: output i averages inputs
    floor(i size / out) .. ceil((i + 1) size / out) - 1."""
    rows = []
    for i in range(out):
        start, end = (i * size) // out, -(-((i + 1) * size) // out)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(size)])
    return jnp.asarray(rows, jnp.float32)


def adaptive_avg_pool(x: jax.Array, out: int | tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d(out) on [N, H, W, C]: the identity when the map already has
    the output size, a reshape and mean when that divides it, otherwise torch's overlapping
    bins (as two small matrix products)."""
    n, h, w, c = x.shape
    oh, ow = (out, out) if isinstance(out, int) else out
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        return jnp.mean(x.reshape(n, oh, h // oh, ow, w // ow, c), axis=(2, 4))
    return jnp.einsum("nhwc,ih,jw->nijc", x, _bins(h, oh).astype(x.dtype),
                      _bins(w, ow).astype(x.dtype))


def flatten_nchw(x: jax.Array) -> jax.Array:
    """[N, H, W, C] -> [N, C * H * W] in torch's (channel-major) order, so a torch Linear that
    follows a flatten loads unchanged."""
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
