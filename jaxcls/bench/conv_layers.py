"""One 3x3 convolution layer's forward and gradients: XLA:CPU (and `models/conv.py`'s kernel
gradient) beside PyTorch's oneDNN convolution, in one process, on ResNet-18-CIFAR and
ResNet-50 shapes. It says which part of a train step loses to PyTorch on this CPU.

    python -m jaxcls.bench.conv_layers [--reps=5]

Columns (median ms): XLA's forward, XLA's input gradient, `models/conv.py`'s kernel gradient
(one matmul per tap over shifted windows), the same gradient over the flattened padded input
(each tap a contiguous row offset, no strided window; a candidate, kept here because it lost),
and torch's forward and forward+backward (channels-last).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcls.bench import timm_step
from jaxcls.models import conv

_NHWC = ("NHWC", "HWIO", "NHWC")
_PADS = ((1, 1), (1, 1))
# (batch, size, in channels, out channels): ResNet-18-CIFAR's first and last stage at batch
# 128, ResNet-50's first 3x3 at batch 8 and 224.
SHAPES = ((128, 32, 64, 64), (128, 4, 512, 512), (8, 56, 64, 64))


def flat_offset_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple) -> jax.Array:
    """The 3x3 / stride 1 / pad 1 kernel gradient with every tap a row offset of the flattened
    padded input; the output gradient is zero-padded to the padded width so that the rows that
    wrap around a row end meet zeros."""
    kh, kw, ci, o = kernel_shape
    ho, wo = g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), *_PADS, (0, 0)))
    hp, wp = xp.shape[1:3]
    gf = jnp.pad(g, ((0, 0), (0, hp - ho), (0, wp - wo), (0, 0))).reshape(-1, o)
    xf = xp.reshape(-1, ci)
    m = xf.shape[0] - (kh - 1) * wp - (kw - 1)
    taps = [jnp.matmul(xf[dy * wp + dx: dy * wp + dx + m].T, gf[:m],
                       preferred_element_type=jnp.float32)
            for dy in range(kh) for dx in range(kw)]
    return jnp.stack(taps).reshape(kernel_shape)


def _median_ms(fn, reps: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 1)


def measure(shape: tuple, reps: int = 5) -> dict:
    """Median ms of each column for one (batch, size, cin, cout) layer, and the candidate's
    largest relative difference from conv.py's gradient."""
    n, size, ci, co = shape
    x = jax.random.normal(jax.random.key(0), (n, size, size, ci))
    w = jax.random.normal(jax.random.key(1), (3, 3, ci, co))
    g = jax.random.normal(jax.random.key(2), (n, size, size, co))

    def forward(x_, w_):
        return lax.conv_general_dilated(x_, w_, (1, 1), _PADS, dimension_numbers=_NHWC)

    fwd = jax.jit(forward)
    dx = jax.jit(lambda x_, w_, g_: jax.vjp(lambda a: forward(a, w_), x_)[1](g_)[0])
    dw = jax.jit(lambda x_, g_: conv._kernel_grad(x_, g_, w.shape, (1, 1), _PADS))
    dw_flat = jax.jit(lambda x_, g_: flat_offset_kernel_grad(x_, g_, w.shape))
    ref = dw(x, g)
    diff = float(jnp.max(jnp.abs(dw_flat(x, g) - ref)) / jnp.max(jnp.abs(ref)))

    torch, _ = timm_step.import_timm()
    torch.set_num_threads(2)
    tx = torch.randn(n, ci, size, size).contiguous(memory_format=torch.channels_last)
    tx.requires_grad_(True)
    tw = torch.randn(co, ci, 3, 3, requires_grad=True)
    tg = torch.randn(n, co, size, size).contiguous(memory_format=torch.channels_last)

    def torch_step():
        torch.nn.functional.conv2d(tx, tw, padding=1).backward(tg)

    with torch.no_grad():
        torch_fwd = _median_ms(lambda: torch.nn.functional.conv2d(tx, tw, padding=1), reps)
    return {"shape": list(shape), "xla_fwd_ms": _median_ms(lambda: fwd(x, w), reps),
            "xla_dx_ms": _median_ms(lambda: dx(x, w, g), reps),
            "convpy_dw_ms": _median_ms(lambda: dw(x, g), reps),
            "flat_offset_dw_ms": _median_ms(lambda: dw_flat(x, g), reps),
            "flat_offset_rel_diff": float(f"{diff:.1e}"),
            "torch_fwd_ms": torch_fwd, "torch_fwd_bwd_ms": _median_ms(torch_step, reps),
            "gflop_fwd": round(2 * n * size * size * ci * co * 9 / 1e9, 2)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    for shape in SHAPES:
        r = measure(shape, args.reps)
        rows.append(r)
        print(f"{'x'.join(map(str, shape)):16s} xla fwd {r['xla_fwd_ms']:7.1f} dx "
              f"{r['xla_dx_ms']:7.1f} | dw conv.py {r['convpy_dw_ms']:7.1f} flat "
              f"{r['flat_offset_dw_ms']:7.1f} | torch fwd {r['torch_fwd_ms']:7.1f} "
              f"fwd+bwd {r['torch_fwd_bwd_ms']:7.1f}", flush=True)
    print(json.dumps({"conv_layers": rows, "xla_backend": jax.default_backend()}))


if __name__ == "__main__":
    main()
