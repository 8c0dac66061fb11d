"""`conv_general_dilated` for flax's `nn.Conv`, with a faster kernel gradient on CPU.

XLA:CPU computes a convolution's kernel gradient as a convolution over the batch axis, which
runs many times slower than the forward pass. The same gradient as one matmul per kernel tap,
sum over n, h, w of x[shifted]^T @ dy, runs 6x faster there (BENCHMARKS.md). On GPU/TPU the
library convolution is used unchanged.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _kernel_grad(x, g, kernel_shape, strides, pads):
    """d loss / d kernel [KH, KW, C, O] from inputs x [N, H, W, C] and output grads g."""
    kh, kw, c, o = kernel_shape
    (sh, sw), (ho, wo) = strides, g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    g2 = g.reshape(-1, o)
    taps = []
    for dy in range(kh):
        for dx in range(kw):
            window = lax.slice(xp, (0, dy, dx, 0),
                               (xp.shape[0], dy + sh * (ho - 1) + 1, dx + sw * (wo - 1) + 1, c),
                               (1, sh, sw, 1))
            taps.append(jnp.matmul(window.reshape(-1, c).T, g2,
                                   preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(kh, kw, c, o)


@functools.cache
def _cpu_conv(strides: tuple, pads: tuple, precision):
    def reference(x, w):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                        precision=precision)

    @jax.custom_vjp
    def conv(x, w):
        return reference(x, w)

    def fwd(x, w):
        return reference(x, w), (x, w)

    def bwd(residuals, g):
        x, w = residuals
        dx = jax.vjp(lambda x_: reference(x_, w), x)[1](g)[0]  # XLA's input gradient is fast
        dw = _kernel_grad(x, g, w.shape, strides, pads).astype(w.dtype)
        return dx, dw

    conv.defvjp(fwd, bwd)
    return conv


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """Drop-in for `lax.conv_general_dilated` (pass it as nn.Conv(conv_general_dilated=...))."""
    plain = (lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and preferred_element_type is None
             and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
             == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if plain and jax.default_backend() == "cpu":
        pads = padding
        if isinstance(pads, str):
            pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, pads)
        pads = tuple((int(lo), int(hi)) for lo, hi in pads)
        if min(min(p) for p in pads) >= 0:
            return _cpu_conv(tuple(window_strides), pads, precision)(lhs, rhs)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
