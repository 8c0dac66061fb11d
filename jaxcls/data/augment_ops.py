"""The augmentation ops that `config.augment` can name, each a builder in the registry `OPS`.

A builder's signature is the op's signature in the config string (`crop(4)`, `flip(p=0.5)`,
`randaugment(2, 9, magnitude_std=0.5)`); it checks its arguments and returns a per-image function
`fn(rng, img) -> img` that `augment.apply` vmaps over the batch, so every example draws its own
parameters; an op marked `context` gets `fn(rng, img, ctx)` with the example's `ctx["index"]`
(its position in the training set) and `ctx["epoch"]` (the epoch it is drawn in), for schedules
over epochs such as `flip_alternate`. Three stages, in this order in a pipeline:

- `host`: `random_resized_crop`, done by the host loader at decode time (no device function);
- `image`: float32 [H, W, 3] in [0, 255] (the deterministic ops of `image_ops` and the policies
  of `policies`, with parameters drawn here), before normalisation;
- `normalized`: `erasing` and `cutout` on the normalised image (as timm, so a random fill is
  N(0, 1) noise in normalised units, and a constant 0 is the mean colour).

Ranges follow torchvision: a number `d` for a symmetric parameter means [-d, d] (rotation,
shear, hue) or [max(0, 1 - d), 1 + d] (colour factors); a pair gives the range itself.
`fill=None` is the mean colour (config.mean x 255), as timm fills its geometric ops.
"""

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

from jaxcls.data import image_ops, policies
from jaxcls.robustness import corruptions

ImageFn = Callable[[jax.Array, jax.Array], jax.Array]
ContextFn = Callable[[jax.Array, jax.Array, dict], jax.Array]  # (rng, img, ctx) -> img
Range = float | tuple[float, float]
Fill = float | tuple[float, float, float] | None
Interpolation = Literal["nearest", "bilinear"]


class OpSpec(NamedTuple):
    builder: Callable[..., ImageFn | ContextFn | None]  # its signature is the op's signature
    stage: Literal["host", "image", "normalized"]
    context: bool = False  # its function takes the example's index and epoch (a ContextFn)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _prob(p: float) -> None:
    _check(0.0 <= p <= 1.0, f"p={p} must be in [0, 1]")


def _interval(name: str, value: Range, symmetric_around: float | None = None,
              low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    """A number d -> [c - d, c + d] about `symmetric_around` c (clipped to `low`); a pair as is."""
    if isinstance(value, tuple):
        lo, hi = value
    else:
        _check(value >= 0, f"{name}={value} must be >= 0 (a pair gives an explicit range)")
        lo, hi = max(symmetric_around - value, low), symmetric_around + value
    _check(low <= lo <= hi <= high, f"{name}={value}: need {low} <= low <= high <= {high}")
    return float(lo), float(hi)


# Each op makes one `jax.random.uniform` call per image and derives every parameter from it:
# XLA:CPU compiles each random call site (a threefry hash) in about a second, so a chain of
# splits and draws per op would dominate the compile time of small models.

def _draws(rng: jax.Array, n: int) -> jax.Array:
    """n independent uniform [0, 1) numbers."""
    return jax.random.uniform(rng, (n,))


def _scale(u: jax.Array, interval: tuple[float, float]) -> jax.Array:
    """Uniform [0, 1) -> uniform on `interval`."""
    return interval[0] + (interval[1] - interval[0]) * u


def _randint(u: jax.Array, n) -> jax.Array:
    """Uniform [0, 1) -> a uniform integer in [0, n)."""
    return jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)


def _where(coin: jax.Array, p: float, new: jax.Array, img: jax.Array) -> jax.Array:
    """`new` with probability p (coin uniform [0, 1)), else `img`."""
    return new if p >= 1.0 else jnp.where(coin < p, new, img)


# ---- host ------------------------------------------------------------------------------------

def random_resized_crop(size: int | None = None, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
    """Inception crop at decode time: area fraction in `scale`, aspect ratio in `ratio`, resized
    to config.image_size (`size`, if given, must equal it). Host only: no device function."""
    _check(size is None or size > 0, f"size={size} must be positive")
    _check(0.0 < scale[0] <= scale[1] <= 1.0, f"scale={scale}: need 0 < low <= high <= 1")
    _check(0.0 < ratio[0] <= ratio[1], f"ratio={ratio}: need 0 < low <= high")
    return None


# ---- image stage: geometry ---------------------------------------------------------------------

def crop(padding: int, fill: float = 0.0,
         padding_mode: Literal["constant", "reflect"] = "constant") -> ImageFn:
    """Random crop of the original size from the image padded by `padding` pixels of `fill`,
    or by its reflection (padding_mode="reflect", as np.pad and torchvision: airbench's
    translate); the shifts in y and x are independent, uniform in -padding..padding."""
    _check(padding >= 0, f"padding={padding} must be >= 0")

    def fn(rng, img):
        h, w, c = img.shape
        _check(padding_mode == "constant" or padding < min(h, w),
               f"padding={padding}: reflect padding needs images larger than it")
        pads = ((padding, padding), (padding, padding), (0, 0))
        padded = (jnp.pad(img, pads, mode="reflect") if padding_mode == "reflect"
                  else jnp.pad(img, pads, constant_values=fill))
        y, x = _randint(_draws(rng, 2), 2 * padding + 1)
        return jax.lax.dynamic_slice(padded, (y, x, 0), (h, w, c))

    return fn


def flip(p: float = 0.5) -> ImageFn:
    """Horizontal (left-right) flip with probability p."""
    _prob(p)
    return lambda rng, img: _where(_draws(rng, 1)[0], p, image_ops.hflip(img), img)


def flip_alternate(seed: int = 0) -> ContextFn:
    """airbench's alternating flip: in its first epoch example i is mirrored or not, a fair coin
    fixed by (seed, i); in every later epoch it is the opposite of the epoch before, so each
    image is seen both ways in every two epochs."""

    def fn(rng, img, ctx):
        del rng  # the draw depends on the example, not on the step
        first = jax.random.bernoulli(jax.random.fold_in(jax.random.key(seed), ctx["index"]))
        return jnp.where(first ^ (ctx["epoch"] % 2 == 1), image_ops.hflip(img), img)

    return fn


def vflip(p: float = 0.5) -> ImageFn:
    """Vertical (up-down) flip with probability p."""
    _prob(p)
    return lambda rng, img: _where(_draws(rng, 1)[0], p, image_ops.vflip(img), img)


def rotate(degrees: Range, interpolation: Interpolation = "nearest", fill: Fill = None
           ) -> ImageFn:
    """Counter-clockwise rotation about the centre by an angle drawn from `degrees`."""
    interval = _interval("degrees", degrees, 0.0)
    return lambda rng, img: image_ops.rotate(img, _scale(_draws(rng, 1)[0], interval), fill,
                                             interpolation)


def affine_matrix(degrees, translate, scale, shear_x, shear_y, height: int, width: int
                  ) -> jax.Array:
    """The 6 numbers for `image_ops.affine` (output pixel -> input pixel, PIL convention) of
    the forward map: shear (x then y, angles in degrees), scale, counter-clockwise rotation by
    `degrees` about the image centre, then translation by `translate` = (tx, ty) pixels."""
    t = jnp.deg2rad(degrees)
    cos, sin = jnp.cos(t), jnp.sin(t)
    # Forward linear part in (x right, y down) coordinates; this rotation is counter-clockwise
    # on screen, the sense of PIL's Image.rotate.
    rot = jnp.array([[cos, sin], [-sin, cos]])
    shx = jnp.array([[1.0, jnp.tan(jnp.deg2rad(shear_x))], [0.0, 1.0]])
    shy = jnp.array([[1.0, 0.0], [jnp.tan(jnp.deg2rad(shear_y)), 1.0]])
    inv = jnp.linalg.inv(scale * rot @ shx @ shy)
    centre = jnp.array([width / 2.0, height / 2.0])  # PIL: pixel (i, j) covers [i, i + 1)
    offset = centre - inv @ (centre + jnp.asarray(translate, jnp.float32))
    return jnp.array([inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1]])


def affine(degrees: Range = 0.0, translate: tuple[float, float] = (0.0, 0.0),
           scale: tuple[float, float] = (1.0, 1.0), shear: Range = 0.0, shear_y: Range = 0.0,
           interpolation: Interpolation = "nearest", fill: Fill = None) -> ImageFn:
    """Random affine map (torchvision RandomAffine): rotation angle from `degrees`, translation
    up to `translate` = (fraction of width, fraction of height), rounded to whole pixels, zoom
    from `scale`, shear angles from `shear` (along x) and `shear_y`; one gather per image."""
    rot = _interval("degrees", degrees, 0.0)
    shx, shy = _interval("shear", shear, 0.0), _interval("shear_y", shear_y, 0.0)
    _check(all(0.0 <= t <= 1.0 for t in translate), f"translate={translate}: fractions in [0, 1]")
    _check(0.0 < scale[0] <= scale[1], f"scale={scale}: need 0 < low <= high")

    def fn(rng, img):
        h, w, _ = img.shape
        u = _draws(rng, 6)
        shift = jnp.round((2.0 * u[1:3] - 1.0) * jnp.array([translate[0] * w, translate[1] * h]))
        matrix = affine_matrix(_scale(u[0], rot), shift, _scale(u[3], scale),
                               _scale(u[4], shx), _scale(u[5], shy), h, w)
        return image_ops.affine(img, matrix, fill, interpolation)

    return fn


def elastic(alpha: float = 50.0, sigma: float = 5.0, p: float = 1.0,
            interpolation: Interpolation = "bilinear", fill: float = 0.0) -> ImageFn:
    """Elastic deformation (torchvision ElasticTransform): every pixel moves by uniform [-1, 1]
    noise smoothed by a Gaussian of std `sigma` pixels and scaled by alpha / 2 pixels."""
    _check(alpha >= 0 and sigma > 0, f"alpha={alpha}, sigma={sigma}: need alpha >= 0, sigma > 0")
    _prob(p)

    def fn(rng, img):
        h, w, _ = img.shape
        # An odd kernel covering +-4 sigma, cut to the image (the blur pads by reflection).
        kernel = min(int(8 * sigma + 1) | 1, 2 * ((min(h, w) - 1) // 2) + 1)
        u = jax.random.uniform(rng, (h * w * 3 + 1,))
        noise = 2.0 * u[1:].reshape(h, w, 3) - 1.0
        # The field is blurred by image_ops in its [0, 255] domain and brought back to [-1, 1];
        # the op's rounding quantises it to steps of 1/127.5 (0.2 px at alpha 50).
        field = image_ops.gaussian_blur((noise + 1.0) * 127.5, sigma, kernel) / 127.5 - 1.0
        ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                              indexing="ij")
        coords = [ys + field[..., 1] * alpha / 2.0, xs + field[..., 0] * alpha / 2.0]
        order = 1 if interpolation == "bilinear" else 0
        out = jnp.stack([ndimage.map_coordinates(img[..., c], coords, order=order,
                                                 mode="constant", cval=fill)
                         for c in range(img.shape[-1])], axis=-1)
        return _where(u[0], p, out, img)

    return fn


# ---- image stage: colour and filters -----------------------------------------------------------

def color_jitter(brightness: Range = 0.0, contrast: Range = 0.0, saturation: Range = 0.0,
                 hue: Range = 0.0, p: float = 1.0) -> ImageFn:
    """torchvision ColorJitter: factors drawn from each range, the enabled adjustments applied
    in a random order per image; with probability p."""
    _prob(p)
    enabled = []
    for name, value, op in (("brightness", brightness, image_ops.brightness),
                            ("contrast", contrast, image_ops.contrast),
                            ("saturation", saturation, image_ops.color)):
        interval = _interval(name, value, 1.0, low=0.0)
        if interval != (1.0, 1.0):
            enabled.append((op, interval))
    hue_interval = _interval("hue", hue, 0.0, low=-0.5, high=0.5)
    if hue_interval != (0.0, 0.0):
        enabled.append((image_ops.hue, hue_interval))
    if not enabled:
        return lambda rng, img: img

    def fn(rng, img):
        k = len(enabled)
        u = _draws(rng, 2 * k + 1)
        factors = jnp.stack([_scale(u[i], iv) for i, (_, iv) in enumerate(enabled)])
        order = jnp.argsort(u[k:2 * k])  # a uniform random permutation
        branches = [lambda x, f, op=op: op(x, f) for op, _ in enabled]
        out = img
        for i in range(k):
            out = jax.lax.switch(order[i], branches, out, factors[order[i]])
        return _where(u[-1], p, out, img)

    return fn


def grayscale(p: float = 0.1) -> ImageFn:
    """Grayscale (PIL "L" weights, kept as 3 channels) with probability p."""
    _prob(p)
    return lambda rng, img: _where(_draws(rng, 1)[0], p, image_ops.grayscale(img), img)


def noise(sigma: float = 0.1, p: float = 1.0) -> ImageFn:
    """Additive Gaussian noise of std `sigma` in [0, 1] units, clipped to the pixel range."""
    _check(sigma >= 0, f"sigma={sigma} must be >= 0")
    _prob(p)

    def fn(rng, img):
        coin, rng = jax.random.split(rng)
        noisy = img + 255.0 * sigma * jax.random.normal(rng, img.shape)
        return _where(_draws(coin, 1)[0], p, jnp.clip(noisy, 0.0, 255.0), img)

    return fn


def blur(kernel_size: int, sigma: Range = (0.1, 2.0), p: float = 1.0) -> ImageFn:
    """Gaussian blur (torchvision GaussianBlur): odd `kernel_size`, std drawn from `sigma`."""
    _check(kernel_size > 0 and kernel_size % 2 == 1, f"kernel_size={kernel_size}: odd, > 0")
    interval = _interval("sigma", sigma, 0.0)
    _check(interval[0] > 0, f"sigma={sigma} must be > 0")
    _prob(p)

    def fn(rng, img):
        u = _draws(rng, 2)
        return _where(u[0], p, image_ops.gaussian_blur(img, _scale(u[1], interval), kernel_size),
                      img)

    return fn


def corrupt(name: str, severity: int = 3, p: float = 1.0) -> ImageFn:
    """A common corruption of `jaxcls.robustness.corruptions` (ImageNet-C / CIFAR-10-C) at
    `severity` 1..5, or 0 for a severity drawn uniformly from 1..5 per image; probability p."""
    corruptions.get(name)
    _check(severity in (0, *corruptions.SEVERITIES), f"severity={severity}: 0 (random) or 1..5")
    _prob(p)
    fn = corruptions.get(name)

    def apply(rng, img):
        coin, pick, rng = jax.random.split(rng, 3)
        if severity:
            out = fn(rng, img, severity)
        else:
            branches = [lambda k, x, s=s: fn(k, x, s) for s in corruptions.SEVERITIES]
            out = jax.lax.switch(jax.random.randint(pick, (), 0, 5), branches, rng, img)
        return _where(_draws(coin, 1)[0], p, out, img)

    return apply


# ---- image stage: policies (A1's policies module) ----------------------------------------------

def randaugment(num_ops: int = 2, magnitude: float = 9.0, magnitude_std: float = 0.0,
                fill: Fill = None) -> ImageFn:
    """RandAugment as timm's rand-m{magnitude}-mstd{magnitude_std}: `num_ops` ops per image,
    magnitude on the 0-10 scale with per-op Gaussian noise of std `magnitude_std`."""
    _check(num_ops >= 0, f"num_ops={num_ops} must be >= 0")
    _check(0.0 <= magnitude <= 10.0 and magnitude_std >= 0,
           f"magnitude={magnitude}, magnitude_std={magnitude_std}: need 0 <= m <= 10, std >= 0")
    return lambda rng, img: policies.rand_augment(rng, img, num_ops, magnitude, magnitude_std,
                                                  fill)


def trivialaugment(fill: Fill = None) -> ImageFn:
    """TrivialAugmentWide (torchvision): one op, magnitude uniform over its range."""
    return lambda rng, img: policies.trivial_augment_wide(rng, img, fill)


def autoaugment(policy: Literal["imagenet"] = "imagenet", fill: Fill = None) -> ImageFn:
    """AutoAugment with the ImageNet policy (torchvision's sub-policies and magnitudes)."""
    return lambda rng, img: policies.auto_augment_imagenet(rng, img, fill)


def augmix(severity: int = 3, width: int = 3, depth: int = -1, alpha: float = 1.0,
           fill: Fill = None) -> ImageFn:
    """AugMix (torchvision): `width` chains of `depth` ops (-1: 1-3) mixed by Dirichlet(alpha)
    weights, then with the original by Beta(alpha, alpha)."""
    _check(1 <= severity <= 10 and width >= 1 and alpha > 0 and (depth == -1 or depth >= 1),
           f"severity={severity}, width={width}, depth={depth}, alpha={alpha}: need severity "
           f"in 1..10, width >= 1, depth -1 or >= 1, alpha > 0")
    return lambda rng, img: policies.augmix(rng, img, severity, width, depth, alpha, fill=fill)


# ---- normalized stage ------------------------------------------------------------------------

def _box_fill(rng: jax.Array, img: jax.Array, inside: jax.Array, fill) -> jax.Array:
    value = jax.random.normal(rng, img.shape) if fill == "random" else jnp.float32(fill)
    return jnp.where(inside[..., None], value, img)


def _draws_and_key(rng: jax.Array, n: int, fill) -> tuple[jax.Array, jax.Array]:
    """n uniforms, and a key for the noise of a random fill (the same key where unused)."""
    if fill != "random":
        return _draws(rng, n), rng
    rng, noise_rng = jax.random.split(rng)
    return _draws(rng, n), noise_rng


def _grid(shape) -> tuple[jax.Array, jax.Array]:
    return jnp.arange(shape[0])[:, None], jnp.arange(shape[1])[None, :]


def erasing(p: float = 0.25, area: tuple[float, float] = (0.02, 1 / 3),
            ratio: tuple[float, float] = (0.3, 1 / 0.3),
            fill: float | Literal["random"] = "random") -> ImageFn:
    """Random erasing (Zhong et al., timm's RandomErasing): with probability p a rectangle of
    `area` fraction and aspect ratio (h / w) in `ratio` (log-uniform) is filled with N(0, 1)
    noise per pixel ("random") or a constant, in normalised units. As timm: up to 10 draws until
    the rectangle fits; none fits, no erasing."""
    _prob(p)
    _check(0.0 < area[0] <= area[1] <= 1.0, f"area={area}: need 0 < low <= high <= 1")
    _check(0.0 < ratio[0] <= ratio[1], f"ratio={ratio}: need 0 < low <= high")
    attempts = 10

    def fn(rng, img):
        h, w, _ = img.shape
        u, noise_rng = _draws_and_key(rng, 2 * attempts + 3, fill)
        target = _scale(u[:attempts], area) * h * w
        aspect = jnp.exp(_scale(u[attempts:2 * attempts], (math.log(ratio[0]),
                                                           math.log(ratio[1]))))
        bh = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
        bw = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
        fits = (bh < h) & (bw < w)
        first = jnp.argmax(fits)
        bh, bw = bh[first], bw[first]
        top = _randint(u[-3], h - bh + 1)
        left = _randint(u[-2], w - bw + 1)
        ys, xs = _grid(img.shape)
        inside = ((ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw)
                  & fits[first] & (u[-1] < p))
        return _box_fill(noise_rng, img, inside, fill)

    return fn


def cutout(size: int, p: float = 1.0, fill: float | Literal["random"] = 0.0) -> ImageFn:
    """Cutout (DeVries & Taylor): a `size` x `size` square centred on a uniformly drawn pixel,
    clipped at the borders, set to `fill` in normalised units (0: the mean colour)."""
    _check(size > 0, f"size={size} must be positive")
    _prob(p)

    def fn(rng, img):
        u, noise_rng = _draws_and_key(rng, 3, fill)
        cy, cx = _randint(u[0], img.shape[0]), _randint(u[1], img.shape[1])
        ys, xs = _grid(img.shape)
        top, left = cy - size // 2, cx - size // 2
        inside = ((ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
                  & (u[2] < p))
        return _box_fill(noise_rng, img, inside, fill)

    return fn


OPS: dict[str, OpSpec] = {
    "random_resized_crop": OpSpec(random_resized_crop, "host"),
    "crop": OpSpec(crop, "image"),
    "flip": OpSpec(flip, "image"),
    "flip_alternate": OpSpec(flip_alternate, "image", context=True),
    "vflip": OpSpec(vflip, "image"),
    "rotate": OpSpec(rotate, "image"),
    "affine": OpSpec(affine, "image"),
    "elastic": OpSpec(elastic, "image"),
    "color_jitter": OpSpec(color_jitter, "image"),
    "grayscale": OpSpec(grayscale, "image"),
    "noise": OpSpec(noise, "image"),
    "blur": OpSpec(blur, "image"),
    "corrupt": OpSpec(corrupt, "image"),
    "randaugment": OpSpec(randaugment, "image"),
    "trivialaugment": OpSpec(trivialaugment, "image"),
    "autoaugment": OpSpec(autoaugment, "image"),
    "augmix": OpSpec(augmix, "image"),
    "erasing": OpSpec(erasing, "normalized"),
    "cutout": OpSpec(cutout, "normalized"),
}
