"""Deterministic image ops with PIL's definitions, on one float32 [H, W, 3] image in [0, 255].

Every op returns integer values wherever PIL's uint8 output would be, so a chain of ops equals
the same chain in PIL. Numeric parameters may be traced JAX scalars (the ops run under `jit` +
`vmap` with per-example parameters); interpolation is static ("nearest" | "bilinear").

References followed (checked against PIL 13 in tests/test_image_ops.py):
  - LUT ops (invert, autocontrast, equalize, solarize, posterize): PIL `ImageOps`; `solarize_add`
    is timm's (add `addition` below `threshold`, saturating at 255).
  - brightness / color / contrast / sharpness: PIL `ImageEnhance`, i.e. `Image.blend(degenerate,
    img, factor)` with the float result truncated and clipped to [0, 255]. Degenerate images:
    black (brightness), the "L" conversion (color), the rounded mean of the "L" conversion
    (contrast), the 3x3 SMOOTH filter with the border kept (sharpness).
  - grayscale: PIL's "L" conversion (ITU-R 601 weights in 16-bit fixed point), on 3 channels.
  - hue: torchvision's tensor `adjust_hue` (float HSV round trip, uint8 out by x * 255.999).
  - affine: PIL `Image.transform(size, AFFINE, matrix)`: output pixel centre (x + .5, y + .5)
    maps to input (a x + b y + c, d x + e y + f); nearest takes the pixel containing that point,
    bilinear blends the 4 nearest pixel centres with edge clamping; points outside the image
    take `fill`. rotate / shear / translate build the matrix as PIL's `Image.rotate` and
    torchvision's `F.affine` (PIL backend) do, and run one gather through `affine`.
  - gaussian_blur: torchvision's (normalised Gaussian kernel, reflect padding, rounded).
"""

import jax
import jax.numpy as jnp

Fill = float | tuple[float, float, float] | jax.Array

LEVELS = 256  # uint8 values


def identity(img: jax.Array) -> jax.Array:
    """Returns the image unchanged."""
    return img


def invert(img: jax.Array) -> jax.Array:
    """PIL `ImageOps.invert`: 255 - x."""
    return 255.0 - img


def solarize(img: jax.Array, threshold) -> jax.Array:
    """PIL `ImageOps.solarize`: inverts values >= threshold."""
    return jnp.where(img < threshold, img, 255.0 - img)


def solarize_add(img: jax.Array, addition, threshold=128) -> jax.Array:
    """timm `solarize_add`: adds `addition` to values below threshold, saturating at 255."""
    return jnp.where(img < threshold, jnp.minimum(img + addition, 255.0), img)


def posterize(img: jax.Array, bits) -> jax.Array:
    """PIL `ImageOps.posterize`: keeps the top `bits` bits (0..8) of each value."""
    step = jnp.exp2(8.0 - jnp.clip(jnp.asarray(bits, jnp.float32), 0, 8))  # a power of two
    return jnp.floor(img / step) * step


# ---- histogram (lookup-table) ops -------------------------------------------------------------


def histogram(img: jax.Array) -> jax.Array:
    """Per-channel histogram of a [..., 3] image: int32 [256, 3]."""
    values = _as_index(img).reshape(-1, 3)
    channel = jnp.broadcast_to(jnp.arange(3), values.shape)
    return jnp.zeros((LEVELS, 3), jnp.int32).at[values, channel].add(1)


def apply_lut(img: jax.Array, lut: jax.Array) -> jax.Array:
    """Maps each value v of channel c to lut[v, c]; lut is [256, 3]."""
    values = _as_index(img).reshape(-1, 3)
    return jnp.take_along_axis(lut, values, axis=0).reshape(img.shape).astype(jnp.float32)


def _present_range(hist: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lowest and highest value present in each channel of a [256, 3] histogram."""
    v = jnp.arange(LEVELS)[:, None]
    return (jnp.min(jnp.where(hist > 0, v, LEVELS - 1), axis=0),
            jnp.max(jnp.where(hist > 0, v, 0), axis=0))


def autocontrast_lut(hist: jax.Array) -> jax.Array:
    """PIL `ImageOps.autocontrast` (cutoff 0) table from a [256, 3] histogram: stretches each
    channel's [lowest, highest] present value to [0, 255]; a flat channel is left as is."""
    v = jnp.arange(LEVELS)[:, None]
    lo, hi = _present_range(hist)
    # PIL computes int(v * 255 / (hi - lo) - lo * 255 / (hi - lo)) in float64, which falls one
    # level short where the exact result is an integer for some spans (0.14% of all (lo, hi, v));
    # this is the exact floor, in integers.
    span = jnp.maximum(hi - lo, 1)
    stretched = jnp.clip(jnp.floor_divide((v - lo) * 255, span), 0, 255)
    return jnp.where(hi > lo, stretched, v).astype(jnp.float32)


def equalize_lut(hist: jax.Array) -> jax.Array:
    """PIL `ImageOps.equalize` table from a [256, 3] histogram: maps values through the
    cumulative histogram in steps of (count of all but the highest present value) // 255."""
    v = jnp.arange(LEVELS)[:, None]
    present = hist > 0
    _, hi = _present_range(hist)
    top_count = jnp.take_along_axis(hist, hi[None], axis=0)[0]
    step = (hist.sum(0) - top_count) // 255
    below = jnp.cumsum(hist, axis=0) - hist  # pixels with a smaller value
    table = jnp.minimum((step // 2 + below) // jnp.maximum(step, 1), 255)
    # PIL leaves a channel with at most one present value, or a zero step, unchanged.
    return jnp.where((present.sum(0) > 1) & (step > 0), table, v).astype(jnp.float32)


def autocontrast(img: jax.Array) -> jax.Array:
    """PIL `ImageOps.autocontrast(img)`."""
    return apply_lut(img, autocontrast_lut(histogram(img)))


def equalize(img: jax.Array) -> jax.Array:
    """PIL `ImageOps.equalize(img)`."""
    return apply_lut(img, equalize_lut(histogram(img)))


# ---- ImageEnhance (blends with a degenerate image) ---------------------------------------------


def blend(degenerate: jax.Array, img: jax.Array, factor) -> jax.Array:
    """PIL `Image.blend(degenerate, img, factor)` on uint8 values: the float32 result
    degenerate + factor * (img - degenerate), truncated and clipped to [0, 255]."""
    factor = jnp.asarray(factor, jnp.float32)
    # PIL rounds the product to float32 before adding. Fused into one multiply-add (XLA does so
    # on CPU and GPU) it is rounded once and can land on the other side of an integer; the clip
    # in between prevents the fusion and changes nothing (beyond +-1024 the output saturates).
    step = jnp.clip(factor * (img - degenerate), -1024.0, 1024.0)
    return jnp.clip(jnp.floor(degenerate + step), 0.0, 255.0)


def luma(img: jax.Array) -> jax.Array:
    """PIL's RGB -> "L" conversion, [..., 3] -> [..., 1]: (19595 R + 38470 G + 7471 B) / 2^16,
    rounded; exact in float32 (the sum stays below 2^24)."""
    weighted = img[..., :1] * 19595.0 + img[..., 1:2] * 38470.0 + img[..., 2:] * 7471.0
    return jnp.floor((weighted + 32768.0) / 65536.0)


def grayscale(img: jax.Array) -> jax.Array:
    """PIL `img.convert("L").convert("RGB")`."""
    return jnp.broadcast_to(luma(img), img.shape)


def mean_luma(img: jax.Array) -> jax.Array:
    """PIL `ImageEnhance.Contrast`'s grey level: the mean of the "L" image rounded half up."""
    total = luma(img).astype(jnp.int32).sum()
    count = img.shape[0] * img.shape[1]
    return ((2 * total + count) // (2 * count)).astype(jnp.float32)


def smooth(img: jax.Array) -> jax.Array:
    """PIL `ImageFilter.SMOOTH` (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13, rounded); PIL
    leaves the one-pixel border unfiltered."""
    h, w, _ = img.shape
    padded = jnp.pad(img, ((1, 1), (1, 1), (0, 0)))
    total = sum(padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) + 4.0 * img
    # Sums are integers and 13 is odd, so total / 13 is never a tie: integer rounding is exact.
    smoothed = jnp.floor((2.0 * total + 13.0) / 26.0)
    interior = jnp.zeros((h, w, 1), bool).at[1:-1, 1:-1].set(True)
    return jnp.where(interior, smoothed, img)


def brightness(img: jax.Array, factor) -> jax.Array:
    """PIL `ImageEnhance.Brightness(img).enhance(factor)`: 0 is black, 1 the original."""
    return blend(jnp.zeros_like(img), img, factor)


def color(img: jax.Array, factor) -> jax.Array:
    """PIL `ImageEnhance.Color(img).enhance(factor)` (saturation): 0 is grey, 1 the original."""
    return blend(grayscale(img), img, factor)


def contrast(img: jax.Array, factor) -> jax.Array:
    """PIL `ImageEnhance.Contrast(img).enhance(factor)`: 0 is the mean grey, 1 the original."""
    return blend(jnp.broadcast_to(mean_luma(img), img.shape), img, factor)


def sharpness(img: jax.Array, factor) -> jax.Array:
    """PIL `ImageEnhance.Sharpness(img).enhance(factor)`: 0 is smoothed, 1 the original."""
    return blend(smooth(img), img, factor)


def hue(img: jax.Array, factor) -> jax.Array:
    """torchvision `adjust_hue` on uint8 tensors: shifts the HSV hue by `factor` in [-0.5, 0.5]
    turns of the colour wheel."""
    x = img / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(-1)
    chroma = v - x.min(-1)
    s = chroma / jnp.where(v > 0, v, 1.0)
    c = jnp.where(chroma > 0, chroma, 1.0)
    # Hue in sixths of a turn, from whichever channel holds the maximum (red wins ties).
    h6 = jnp.where(v == r, (g - b) / c, jnp.where(v == g, 2.0 + (b - r) / c, 4.0 + (r - g) / c))
    h = jnp.mod(jnp.where(chroma > 0, h6 / 6.0, 0.0) + factor, 1.0)
    # Back to RGB: each channel k is v - v s clip(min(p, 4 - p), 0, 1), p = (k + 6 h) mod 6.
    k = jnp.array([5.0, 3.0, 1.0])
    p = jnp.mod(k + 6.0 * h[..., None], 6.0)
    out = v[..., None] * (1.0 - s[..., None] * jnp.clip(jnp.minimum(p, 4.0 - p), 0.0, 1.0))
    return jnp.floor(jnp.clip(out, 0.0, 1.0) * 255.999)


# ---- geometry ----------------------------------------------------------------------------------


def affine(img: jax.Array, matrix, fill: Fill = 128, interpolation: str = "nearest") -> jax.Array:
    """PIL `img.transform(img.size, Image.AFFINE, matrix, resample, fillcolor=fill)`: output
    pixel (x, y) samples the input at (a x + b y + c, d x + e y + f), pixel centres at +0.5."""
    if interpolation not in ("nearest", "bilinear"):
        raise ValueError(f"interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
    h, w, _ = img.shape
    a, b, c, d, e, f = (jnp.asarray(m, jnp.float32) for m in matrix)
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) + 0.5,
                          jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij")
    x_in = a * xs + b * ys + c
    y_in = d * xs + e * ys + f
    if interpolation == "nearest":
        # Snapped to 1/4096 px, far above float32 noise (~1e-5 px at 224 px) and below PIL's
        # own 16.16 fixed-point error: exact ties (pixel edges hit by 45-degree rotations, say)
        # then floor the same way under jit, eagerly and on every backend.
        x_in, y_in = (jnp.round(v * 4096.0) / 4096.0 for v in (x_in, y_in))
    inside = ((x_in >= 0) & (x_in < w) & (y_in >= 0) & (y_in < h))[..., None]
    flat = img.reshape(-1, 3)

    def pixels(yi, xi):
        yi, xi = jnp.clip(yi, 0, h - 1), jnp.clip(xi, 0, w - 1)
        return flat[(yi * w + xi).reshape(-1)].reshape(h, w, 3)

    if interpolation == "nearest":
        out = pixels(jnp.floor(y_in).astype(jnp.int32), jnp.floor(x_in).astype(jnp.int32))
    else:
        xs0, ys0 = x_in - 0.5, y_in - 0.5
        x0, y0 = jnp.floor(xs0), jnp.floor(ys0)
        dx, dy = (xs0 - x0)[..., None], (ys0 - y0)[..., None]
        x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
        top = _lerp(pixels(y0, x0), pixels(y0, x0 + 1), dx)
        bottom = _lerp(pixels(y0 + 1, x0), pixels(y0 + 1, x0 + 1), dx)
        out = jnp.floor(_lerp(top, bottom, dy))  # PIL truncates the blend
    return jnp.where(inside, out, jnp.broadcast_to(jnp.asarray(fill, jnp.float32), (3,)))


def rotate_matrix(degrees, height: int, width: int) -> tuple:
    """PIL `Image.rotate`'s inverse matrix: counter-clockwise by `degrees` about the centre."""
    theta = -jnp.deg2rad(jnp.mod(jnp.asarray(degrees, jnp.float32), 360.0))
    # PIL rounds cos and sin to 15 decimals, which makes multiples of 90 degrees exact pixel
    # permutations; float32 leaves ~4e-8 there, so snap values that close to 0 or +-1.
    cos, sin = (jnp.where(jnp.abs(v) < 1e-6, 0.0, jnp.where(jnp.abs(v) > 1 - 1e-6, jnp.sign(v), v))
                for v in (jnp.cos(theta), jnp.sin(theta)))
    cx, cy = width / 2, height / 2
    return (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


def shear_x_matrix(factor) -> tuple:
    """x_in = x + factor * y (timm `shear_x`; torchvision's ShearX with shear atan(factor))."""
    return (1.0, factor, 0.0, 0.0, 1.0, 0.0)


def shear_y_matrix(factor) -> tuple:
    """y_in = factor * x + y (timm `shear_y`; torchvision's ShearY)."""
    return (1.0, 0.0, 0.0, factor, 1.0, 0.0)


def translate_x_matrix(pixels) -> tuple:
    """Moves the content right by `pixels` (torchvision `F.affine(translate=[pixels, 0])`)."""
    return (1.0, 0.0, -pixels, 0.0, 1.0, 0.0)


def translate_y_matrix(pixels) -> tuple:
    """Moves the content down by `pixels`."""
    return (1.0, 0.0, 0.0, 0.0, 1.0, -pixels)


def rotate(img: jax.Array, degrees, fill: Fill = 128, interpolation: str = "nearest") -> jax.Array:
    """PIL `img.rotate(degrees, resample, fillcolor=fill)`: counter-clockwise, same size."""
    return affine(img, rotate_matrix(degrees, *img.shape[:2]), fill, interpolation)


def shear_x(img: jax.Array, factor, fill: Fill = 128, interpolation: str = "nearest") -> jax.Array:
    """PIL transform with matrix (1, factor, 0, 0, 1, 0)."""
    return affine(img, shear_x_matrix(factor), fill, interpolation)


def shear_y(img: jax.Array, factor, fill: Fill = 128, interpolation: str = "nearest") -> jax.Array:
    """PIL transform with matrix (1, 0, 0, factor, 1, 0)."""
    return affine(img, shear_y_matrix(factor), fill, interpolation)


def translate_x(img: jax.Array, pixels, fill: Fill = 128,
                interpolation: str = "nearest") -> jax.Array:
    """Moves the content right by `pixels` (left if negative), filling the uncovered strip."""
    return affine(img, translate_x_matrix(pixels), fill, interpolation)


def translate_y(img: jax.Array, pixels, fill: Fill = 128,
                interpolation: str = "nearest") -> jax.Array:
    """Moves the content down by `pixels` (up if negative), filling the uncovered strip."""
    return affine(img, translate_y_matrix(pixels), fill, interpolation)


def hflip(img: jax.Array) -> jax.Array:
    """Mirrors left-right (PIL `Transpose.FLIP_LEFT_RIGHT`)."""
    return img[:, ::-1]


def vflip(img: jax.Array) -> jax.Array:
    """Mirrors top-bottom (PIL `Transpose.FLIP_TOP_BOTTOM`)."""
    return img[::-1]


def gaussian_blur(img: jax.Array, sigma, kernel_size: int) -> jax.Array:
    """torchvision `gaussian_blur(img, [k, k], [sigma, sigma])` on uint8: a normalised Gaussian
    of odd static size `kernel_size`, reflect padding, separable, rounded to integers."""
    if kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"gaussian_blur kernel_size must be odd and positive, got {kernel_size}")
    half = kernel_size // 2
    offsets = jnp.arange(-half, half + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * jnp.square(offsets / jnp.asarray(sigma, jnp.float32)))
    weights = weights / weights.sum()
    h, w, _ = img.shape
    padded = jnp.pad(img, ((half, half), (half, half), (0, 0)), mode="reflect")
    rows = sum(weights[i] * padded[:, i:i + w] for i in range(kernel_size))
    out = sum(weights[i] * rows[i:i + h] for i in range(kernel_size))
    return jnp.clip(jnp.round(out), 0.0, 255.0)


def _lerp(a: jax.Array, b: jax.Array, t: jax.Array) -> jax.Array:
    """a + (b - a) t, PIL's form of the bilinear blend (it rounds the same as PIL's)."""
    return a + (b - a) * t


def _as_index(img: jax.Array) -> jax.Array:
    """Integer-valued floats in [0, 255] -> int32 indices for tables and histograms."""
    return jnp.clip(jnp.round(img), 0, LEVELS - 1).astype(jnp.int32)

