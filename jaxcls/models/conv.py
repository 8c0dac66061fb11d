"""`conv_general_dilated` for flax's `nn.Conv`, with faster CPU paths.

XLA:CPU computes a convolution's kernel gradient as a convolution over the batch axis, which
runs many times slower than the forward pass. The same gradient as one matmul per kernel tap,
sum over n, h, w of x[shifted]^T @ dy, runs 6x faster there (BENCHMARKS.md). Depthwise
convolutions (ConvNeXt's 7x7) are slow on XLA:CPU in every direction; as a sum of shifted
multiplies, one per tap, the forward runs 26x, the input gradient 11x and the kernel gradient
3x faster there (BENCHMARKS.md); strided ones (EfficientNet's 3x3/5x5 stride 2) as strided
slices: at 16x112x112x96, 3x3/2, on this 2-core CPU (shared, so noisy) the forward took 117 ms
against lax's 487 ms and the gradient 0.73 s against 9.0 s. On GPU/TPU the library
convolution is used unchanged. Grouped convolutions (RegNet's 3x3 in groups of 24..112
channels) keep XLA's forward and input gradient; their kernel gradient, which XLA:CPU runs
10-300x slower than the forward, is one batched matmul per tap and group: the whole gradient of a
16x14x14x336 3x3 conv in groups of 24 took 331 ms against XLA's 5.2 s (BENCHMARKS.md).
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


def _kernel_grad(x, g, kernel_shape, strides, pads, groups: int = 1):
    """d loss / d kernel [KH, KW, C / groups, O] from inputs x [N, H, W, C] and output grads g
    (output channels in `groups` contiguous blocks, as lax's feature_group_count)."""
    kh, kw, ci, o = kernel_shape
    (sh, sw), (ho, wo) = strides, g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    g2 = g.reshape(-1, o) if groups == 1 else g.reshape(-1, groups, o // groups)
    taps = []
    for dy in range(kh):
        for dx in range(kw):
            window = lax.slice(xp, (0, dy, dx, 0), (xp.shape[0], dy + sh * (ho - 1) + 1,
                                                    dx + sw * (wo - 1) + 1, x.shape[3]),
                               (1, sh, sw, 1))
            if groups == 1:
                taps.append(jnp.matmul(window.reshape(-1, ci).T, g2,
                                       preferred_element_type=jnp.float32))
            else:
                taps.append(jnp.einsum("mgi,mgo->igo", window.reshape(-1, groups, ci), g2,
                                       preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(kh, kw, ci, o)


@functools.cache
def _cpu_conv(strides: tuple, pads: tuple, precision, groups: int = 1):
    def reference(x, w):
        return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_NHWC,
                                        feature_group_count=groups, precision=precision)

    @jax.custom_vjp
    def conv(x, w):
        return reference(x, w)

    def fwd(x, w):
        return reference(x, w), (x, w)

    def bwd(residuals, g):
        x, w = residuals
        dx = jax.vjp(lambda x_: reference(x_, w), x)[1](g)[0]  # XLA's input gradient is fast
        dw = _kernel_grad(x, g, w.shape, strides, pads, groups).astype(w.dtype)
        return dx, dw

    conv.defvjp(fwd, bwd)
    return conv


_cpu_paths = [True]


@contextlib.contextmanager
def library_convolutions():
    """Within this block, trace every convolution as `lax.conv_general_dilated` (for counting
    MACs from a jaxpr, where the CPU paths would show as matmuls and multiplies)."""
    _cpu_paths.append(False)
    try:
        yield
    finally:
        _cpu_paths.pop()


def _window(xp, dy: int, dx: int, out_hw, strides=(1, 1)):
    (sh, sw), (ho, wo) = strides, out_hw
    return lax.slice(xp, (0, dy, dx, 0), (xp.shape[0], dy + sh * (ho - 1) + 1,
                                          dx + sw * (wo - 1) + 1, xp.shape[3]),
                     (1, sh, sw, 1))


def _depthwise_taps(x, w, pads, strides=(1, 1)):
    """Depthwise conv as sum over taps of (strided) shifted x times that tap's weights."""
    kh, kw = w.shape[:2]
    xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    out_hw = ((xp.shape[1] - kh) // strides[0] + 1, (xp.shape[2] - kw) // strides[1] + 1)
    return sum(_window(xp, dy, dx, out_hw, strides) * w[dy, dx, 0]
               for dy in range(kh) for dx in range(kw))


@functools.cache
def _cpu_depthwise(pads: tuple, strides: tuple = (1, 1)):
    @jax.custom_vjp
    def conv(x, w):
        return _depthwise_taps(x, w, pads, strides)

    def fwd(x, w):
        return conv(x, w), (x, w)

    def bwd(residuals, g):
        x, w = residuals
        dx = jax.vjp(lambda x_: _depthwise_taps(x_, w, pads, strides), x)[1](g)[0]
        xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        dw = jnp.stack([jnp.sum(_window(xp, dy, dx_, g.shape[1:3], strides) * g,
                                axis=(0, 1, 2), dtype=jnp.float32)
                        for dy in range(w.shape[0]) for dx_ in range(w.shape[1])])
        return dx, dw.reshape(w.shape).astype(w.dtype)

    conv.defvjp(fwd, bwd)
    return conv


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """Drop-in for `lax.conv_general_dilated` (pass it as nn.Conv(conv_general_dilated=...))."""
    simple = (lhs.ndim == 4 and batch_group_count == 1
              and all(d == 1 for d in (lhs_dilation or (1, 1)))
              and all(d == 1 for d in (rhs_dilation or (1, 1)))
              and preferred_element_type is None
              and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
              == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
    if simple and _cpu_paths[-1] and jax.default_backend() == "cpu":
        pads = padding
        if isinstance(pads, str):
            pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, pads)
        pads = tuple((int(lo), int(hi)) for lo, hi in pads)
        depthwise = feature_group_count == lhs.shape[3] == rhs.shape[3] and rhs.shape[2] == 1
        if min(min(p) for p in pads) >= 0:
            if feature_group_count == 1:
                return _cpu_conv(tuple(window_strides), pads, precision)(lhs, rhs)
            if depthwise:
                return _cpu_depthwise(pads, tuple(window_strides))(lhs, rhs)
            return _cpu_conv(tuple(window_strides), pads, precision,
                             feature_group_count)(lhs, rhs)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type)
