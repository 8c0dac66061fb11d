"""Random augmentation policies on one float32 [H, W, 3] image in [0, 255]: timm's RandAugment,
torchvision's TrivialAugmentWide, AutoAugment (ImageNet policy) and AugMix.

How they are vectorised. `vmap` turns a `lax.switch` over N ops into all N ops plus a select, so
each policy instead draws (op id, parameter) pairs with `choose_*` and runs them through
`apply_op`, which costs the same whatever op it applies: one histogram feeding a [256, 3] lookup
table picked among the seven LUT ops (identity, autocontrast, equalize, invert, posterize,
solarize, solarize_add), one blend with a degenerate image picked among the four ImageEnhance ops,
and one gather through an affine matrix picked among the five geometric ops (identity matrix
otherwise). The per-op selection works on small arrays (6 numbers, a [256, 3] table); per slot
the image goes through one histogram, one table gather, the grey / 3x3-smoothed / mean
degenerates and one blend, and one affine gather (four with bilinear), then a select among the
three results. Slots run in a `lax.scan`, so XLA compiles one slot whatever the chain length.
Geometry is not merged across slots: ops apply in the drawn order, so a policy equals the same
chain of PIL ops (fill pixels go through later colour ops and histograms see them, as in PIL).

Magnitude -> parameter tables:

  op            timm RandAugment "inc" (level m in [0, 10])   torchvision (bin b, value v)
  rotate        +-3 m degrees                                 +-v degrees
  shear_x/y     +-0.03 m                                      +-v (matrix entry; torchvision
                                                              shears by atan(v) degrees)
  translate_x/y +-0.045 m * width/height pixels               +-int(v) pixels
  brightness,   max(0.1, 1 +- 0.09 m)                         1 +- v
  color, contrast, sharpness
  posterize     4 - int(0.4 m) bits                           v bits
  solarize      threshold 256 - int(25.6 m)                   threshold v
  solarize_add  add int(11 m) below 128                       (not used)

torchvision's spaces (v for bin b of num_bins):
  TrivialAugmentWide (31 bins): shear 0..0.99, translate 0..32 px, rotate 0..135, enhance
    0..0.99, posterize 8 - round(b / 5), solarize 255..0; plus identity, autocontrast, equalize.
  AutoAugment (10 bins): shear 0..0.3, rotate 0..30, enhance 0..0.9, posterize
    8 - round(b / 2.25), solarize 255..0; the 25 two-op ImageNet sub-policies.
  AugMix (10 bins, b < severity): shear 0..0.3, translate 0..size/3, rotate 0..30, enhance 0..0.9,
    posterize 4 - round(b / 2.25), solarize 255..0, autocontrast, equalize.
Differences from the references: ops follow PIL's definitions throughout (torchvision's AugMix
runs its tensor backend), and `fill` defaults to 128 where torchvision fills with 0.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.data import image_ops

OPS = ("identity", "autocontrast", "equalize", "invert", "posterize", "solarize", "solarize_add",
       "brightness", "color", "contrast", "sharpness",
       "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
OP_ID = {name: i for i, name in enumerate(OPS)}
_FIRST_BLEND, _FIRST_GEOMETRY = OP_ID["brightness"], OP_ID["rotate"]
_ENHANCE = ("brightness", "color", "contrast", "sharpness")
_GEOMETRY = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def apply_op(img: jax.Array, op, param, fill: image_ops.Fill = 128,
             interpolation: str = "nearest") -> jax.Array:
    """Applies OPS[op] with its PIL parameter `param` (bits, threshold, addition, enhance factor,
    degrees, shear factor or pixels; ignored by parameterless ops); op and param may be traced."""
    levels = jnp.broadcast_to(jnp.arange(image_ops.LEVELS, dtype=jnp.float32)[:, None],
                              (image_ops.LEVELS, 3))
    hist = image_ops.histogram(img)
    luts = jnp.stack([levels, image_ops.autocontrast_lut(hist), image_ops.equalize_lut(hist),
                      image_ops.invert(levels), image_ops.posterize(levels, param),
                      image_ops.solarize(levels, param), image_ops.solarize_add(levels, param)])
    looked_up = image_ops.apply_lut(img, luts[jnp.where(op < _FIRST_BLEND, op, 0)])

    gray = image_ops.grayscale(img)
    degenerate = jnp.where(op == OP_ID["color"], gray,
                           jnp.where(op == OP_ID["contrast"], image_ops.mean_luma(img),
                                     jnp.where(op == OP_ID["sharpness"], image_ops.smooth(img),
                                               0.0)))
    blended = image_ops.blend(degenerate, img, param)

    h, w, _ = img.shape
    matrices = jnp.stack([jnp.stack([jnp.asarray(v, jnp.float32) for v in m]) for m in (
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        image_ops.rotate_matrix(param, h, w),
        image_ops.shear_x_matrix(param), image_ops.shear_y_matrix(param),
        image_ops.translate_x_matrix(param), image_ops.translate_y_matrix(param))])
    geometry = jnp.where(op >= _FIRST_GEOMETRY, op - _FIRST_GEOMETRY + 1, 0)
    warped = image_ops.affine(img, matrices[geometry], fill, interpolation)
    return jnp.where(op < _FIRST_BLEND, looked_up, jnp.where(op < _FIRST_GEOMETRY, blended, warped))


def apply_ops(img: jax.Array, ops: jax.Array, params: jax.Array, fill: image_ops.Fill = 128,
              interpolation: str = "nearest") -> jax.Array:
    """Applies the chain ops[0], ops[1], ... with their params (a scan: one compiled slot)."""
    def step(x, op_param):
        return apply_op(x, *op_param, fill, interpolation), None

    return jax.lax.scan(step, img, (ops, params))[0]


def _uniforms(rng: jax.Array, shape: tuple, count: int) -> tuple:
    """`count` arrays of uniform draws in (0, 1) of `shape`, from one RNG call (each separate
    RNG call adds seconds of XLA:CPU compile time)."""
    u = jax.random.uniform(rng, (count, *shape), minval=1e-7, maxval=1.0 - 1e-7)
    return tuple(u)


def _index(u: jax.Array, n: int) -> jax.Array:
    """A uniform draw in (0, 1) -> a uniform integer in [0, n)."""
    return jnp.minimum(jnp.floor(u * n), n - 1).astype(jnp.int32)


# ---- timm RandAugment ---------------------------------------------------------------------------

RAND_INCREASING_OPS = ("autocontrast", "equalize", "invert", "rotate", "posterize", "solarize",
                       "solarize_add", "color", "contrast", "brightness", "sharpness",
                       "shear_x", "shear_y", "translate_x", "translate_y")


def timm_param(op, level, sign, height: int, width: int) -> jax.Array:
    """timm's "increasing" level -> parameter for OPS[op] at `level` in [0, 10] and sign +-1."""
    level = jnp.asarray(level, jnp.float32)
    values = {
        "posterize": 4.0 - jnp.floor(level / 10.0 * 4.0),
        "solarize": 256.0 - jnp.floor(level / 10.0 * 256.0),
        "solarize_add": jnp.floor(level / 10.0 * 110.0),
        "rotate": sign * level * 3.0,
        "shear_x": sign * level * 0.03,
        "shear_y": sign * level * 0.03,
        "translate_x": sign * level * 0.045 * width,
        "translate_y": sign * level * 0.045 * height,
        **{name: jnp.maximum(0.1, 1.0 + sign * level * 0.09) for name in _ENHANCE},
    }
    table = jnp.stack([jnp.asarray(values.get(name, 0.0), jnp.float32) for name in OPS])
    return table[op]


def choose_rand_augment(rng: jax.Array, num_ops: int, magnitude, magnitude_std=0.0,
                        prob: float = 0.5, height: int = 224,
                        width: int = 224) -> tuple[jax.Array, jax.Array]:
    """timm RandAugment draws: `num_ops` ops uniformly with replacement from
    RAND_INCREASING_OPS, each kept with probability `prob` (identity otherwise), at level
    magnitude + N(0, magnitude_std) (uniform in [0, magnitude] if the std is inf) clipped to
    [0, 10], with a random sign. Returns (op ids [num_ops], params [num_ops])."""
    pick, keep, uniform, noise, flip = _uniforms(rng, (num_ops,), 5)
    candidates = jnp.array([OP_ID[name] for name in RAND_INCREASING_OPS])
    ops = jnp.where(keep < prob, candidates[_index(pick, len(candidates))], OP_ID["identity"])
    magnitude = jnp.asarray(magnitude, jnp.float32)
    std = jnp.asarray(magnitude_std, jnp.float32)
    normal = jnp.sqrt(2.0) * jax.lax.erf_inv(2.0 * noise - 1.0)
    level = jnp.where(jnp.isinf(std), uniform * magnitude,
                      magnitude + jnp.where(jnp.isinf(std), 0.0, std) * normal)
    level = jnp.clip(level, 0.0, 10.0)
    sign = jnp.where(flip < 0.5, -1.0, 1.0)
    params = jax.vmap(timm_param, (0, 0, 0, None, None))(ops, level, sign, height, width)
    return ops, params


def rand_augment(rng: jax.Array, img: jax.Array, num_ops: int, magnitude, magnitude_std=0.0,
                 fill: image_ops.Fill = 128, *, prob: float = 0.5,
                 interpolation: str = "bilinear") -> jax.Array:
    """timm `rand-m{magnitude}-n{num_ops}-mstd{magnitude_std}-inc1` (timm picks bilinear or
    bicubic at random for geometry; bicubic is not implemented, so bilinear by default)."""
    ops, params = choose_rand_augment(rng, num_ops, magnitude, magnitude_std, prob, *img.shape[:2])
    return apply_ops(img, ops, params, fill, interpolation)


# ---- torchvision policies -----------------------------------------------------------------------


def _space(num_bins: int, shear: float, rotate: float, enhance: float, posterize_top: int,
           posterize_span: int, translate: tuple[float, float] = (0.0, 0.0)) -> dict:
    """A torchvision augmentation space: op name -> (magnitudes [num_bins], signed)."""
    def bins(top):
        return np.linspace(0.0, top, num_bins, dtype=np.float32)

    posterize = posterize_top - np.round(np.arange(num_bins) / ((num_bins - 1) / posterize_span))
    return {
        "shear_x": (bins(shear), True), "shear_y": (bins(shear), True),
        "translate_x": (bins(translate[0]), True), "translate_y": (bins(translate[1]), True),
        "rotate": (bins(rotate), True),
        **{name: (bins(enhance), True) for name in _ENHANCE},
        "posterize": (posterize.astype(np.float32), False),
        "solarize": (np.linspace(255.0, 0.0, num_bins, dtype=np.float32), False),
        **{name: (np.zeros(num_bins, np.float32), False)
           for name in ("identity", "autocontrast", "equalize", "invert")},
    }


def torchvision_param(op, value) -> jax.Array:
    """torchvision's `_apply_op` parameter for OPS[op] from its signed magnitude `value`."""
    enhance = jnp.isin(op, jnp.array([OP_ID[n] for n in _ENHANCE]))
    translate = (op == OP_ID["translate_x"]) | (op == OP_ID["translate_y"])
    return jnp.where(enhance, 1.0 + value, jnp.where(translate, jnp.trunc(value), value))


def _choose_torchvision(uniforms: tuple, space: dict, names, bin_limit: int) -> tuple:
    """Picks from three uniform draws an op of `names`, a bin below `bin_limit` and a sign."""
    pick, level, flip = uniforms
    ids = jnp.array([OP_ID[n] for n in names])
    magnitudes = jnp.asarray(np.stack([space[n][0] for n in names]))
    signed = jnp.array([space[n][1] for n in names])
    which = _index(pick, len(names))
    value = magnitudes[which, _index(level, bin_limit)]
    value = jnp.where(signed[which] & (flip < 0.5), -value, value)
    return ids[which], torchvision_param(ids[which], value)


TRIVIAL_AUGMENT_OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
                       "brightness", "color", "contrast", "sharpness", "posterize", "solarize",
                       "autocontrast", "equalize")
_TRIVIAL_SPACE = _space(31, shear=0.99, rotate=135.0, enhance=0.99, posterize_top=8,
                        posterize_span=6, translate=(32.0, 32.0))


def choose_trivial_augment_wide(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torchvision TrivialAugmentWide draws: one op of 14, one of 31 bins, a sign.
    Returns (op ids [1], params [1])."""
    return _choose_torchvision(_uniforms(rng, (1,), 3), _TRIVIAL_SPACE, TRIVIAL_AUGMENT_OPS, 31)


def trivial_augment_wide(rng: jax.Array, img: jax.Array, fill: image_ops.Fill = 128, *,
                         interpolation: str = "nearest") -> jax.Array:
    """torchvision `TrivialAugmentWide()` (31 bins)."""
    return apply_ops(img, *choose_trivial_augment_wide(rng), fill, interpolation)


# torchvision's AutoAugmentPolicy.IMAGENET: 25 sub-policies of two (op, probability, bin) each.
IMAGENET_POLICY = (
    (("posterize", 0.4, 8), ("rotate", 0.6, 9)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, 0)),
    (("equalize", 0.8, 0), ("equalize", 0.6, 0)),
    (("posterize", 0.6, 7), ("posterize", 0.6, 6)),
    (("equalize", 0.4, 0), ("solarize", 0.2, 4)),
    (("equalize", 0.4, 0), ("rotate", 0.8, 8)),
    (("solarize", 0.6, 3), ("equalize", 0.6, 0)),
    (("posterize", 0.8, 5), ("equalize", 1.0, 0)),
    (("rotate", 0.2, 3), ("solarize", 0.6, 8)),
    (("equalize", 0.6, 0), ("posterize", 0.4, 6)),
    (("rotate", 0.8, 8), ("color", 0.4, 0)),
    (("rotate", 0.4, 9), ("equalize", 0.6, 0)),
    (("equalize", 0.0, 0), ("equalize", 0.8, 0)),
    (("invert", 0.6, 0), ("equalize", 1.0, 0)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("rotate", 0.8, 8), ("color", 1.0, 2)),
    (("color", 0.8, 8), ("solarize", 0.8, 7)),
    (("sharpness", 0.4, 7), ("invert", 0.6, 0)),
    (("shear_x", 0.6, 5), ("equalize", 1.0, 0)),
    (("color", 0.4, 0), ("equalize", 0.6, 0)),
    (("equalize", 0.4, 0), ("solarize", 0.2, 4)),
    (("solarize", 0.6, 5), ("autocontrast", 0.6, 0)),
    (("invert", 0.6, 0), ("equalize", 1.0, 0)),
    (("color", 0.6, 4), ("contrast", 1.0, 8)),
    (("equalize", 0.8, 0), ("equalize", 0.6, 0)),
)
_AUTO_AUGMENT_SPACE = _space(10, shear=0.3, rotate=30.0, enhance=0.9, posterize_top=8,
                             posterize_span=4)
# The policy as [25, 2] arrays.
_AA_OPS = np.array([[OP_ID[n] for n, _, _ in policy] for policy in IMAGENET_POLICY])
_AA_PROBS = np.array([[p for _, p, _ in policy] for policy in IMAGENET_POLICY], np.float32)
_AA_VALUES = np.array([[_AUTO_AUGMENT_SPACE[n][0][b] for n, _, b in policy]
                       for policy in IMAGENET_POLICY], np.float32)
_AA_SIGNED = np.array([[_AUTO_AUGMENT_SPACE[n][1] for n, _, _ in policy]
                       for policy in IMAGENET_POLICY])


def choose_auto_augment_imagenet(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torchvision AutoAugment(IMAGENET) draws: a sub-policy, then each of its two ops applies
    if a uniform draw is <= its probability, with a random sign. Returns (op ids [2],
    params [2]), identity for ops that do not apply."""
    pick, keep, flip = _uniforms(rng, (2,), 3)
    chosen = _index(pick[0], len(IMAGENET_POLICY))
    ops, probs, values, signed = (jnp.asarray(table)[chosen]
                                  for table in (_AA_OPS, _AA_PROBS, _AA_VALUES, _AA_SIGNED))
    values = jnp.where(signed & (flip < 0.5), -values, values)
    ops = jnp.where(keep <= probs, ops, OP_ID["identity"])
    return ops, torchvision_param(ops, values)


def auto_augment_imagenet(rng: jax.Array, img: jax.Array, fill: image_ops.Fill = 128, *,
                          interpolation: str = "nearest") -> jax.Array:
    """torchvision `AutoAugment(AutoAugmentPolicy.IMAGENET)`."""
    return apply_ops(img, *choose_auto_augment_imagenet(rng), fill, interpolation)


AUGMIX_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate", "posterize",
              "solarize", "autocontrast", "equalize", "brightness", "color", "contrast",
              "sharpness")
_MAX_DEPTH = 3  # torchvision draws a chain depth in [1, 3] when depth <= 0


def choose_augmix(rng: jax.Array, image_size: tuple[int, int], severity: int = 3,
                  width: int = 3, depth: int = -1,
                  alpha: float = 1.0) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """torchvision AugMix draws for an image of (height, width) `image_size`: `width` chains of
    `depth` ops (random in [1, 3] if depth <= 0, identity past a chain's end) at bins below
    `severity`, the original's weight m ~ Beta(alpha, alpha) and chain weights
    (1 - m) Dirichlet(alpha). Returns (ops [width, d], params
    [width, d], original weight [], chain weights [width])."""
    if not 1 <= severity <= 10:
        raise ValueError(f"augmix severity must be in [1, 10], got {severity}")
    space = _space(10, shear=0.3, rotate=30.0, enhance=0.9, posterize_top=4, posterize_span=4,
                   translate=(image_size[1] / 3.0, image_size[0] / 3.0))
    ops_rng, mix_rng = jax.random.split(rng)
    slots = depth if depth > 0 else _MAX_DEPTH
    pick, level, flip, length = _uniforms(ops_rng, (width, slots), 4)
    ops, params = _choose_torchvision((pick, level, flip), space, AUGMIX_OPS, severity)
    if depth <= 0:  # the chain's length from its first slot's fourth draw
        ops = jnp.where(jnp.arange(slots) < 1 + _index(length[:, :1], _MAX_DEPTH), ops,
                        OP_ID["identity"])
    # Beta(a, a) and Dirichlet(a, ..., a) as normalised Gamma(a) draws; Gamma(1) is the
    # exponential distribution, which skips the rejection sampler (and its compile time).
    if alpha == 1.0:
        gammas = jax.random.exponential(mix_rng, (width + 2,))
    else:
        gammas = jax.random.gamma(mix_rng, jnp.full((width + 2,), alpha, jnp.float32))
    original = gammas[0] / (gammas[0] + gammas[1])
    return ops, params, original, gammas[2:] / gammas[2:].sum() * (1.0 - original)


def augmix(rng: jax.Array, img: jax.Array, severity: int = 3, width: int = 3, depth: int = -1,
           alpha: float = 1.0, *, fill: image_ops.Fill = 128,
           interpolation: str = "bilinear") -> jax.Array:
    """torchvision `AugMix(severity, width, depth, alpha)`: the original and `width` augmented
    chains mixed with random convex weights, truncated to integers as its uint8 output."""
    ops, params, original, chains = choose_augmix(rng, img.shape[:2], severity, width, depth,
                                                  alpha)
    augmented = jax.vmap(lambda o, p: apply_ops(img, o, p, fill, interpolation))(ops, params)
    mixed = original * img + jnp.tensordot(chains, augmented, axes=1)
    return jnp.clip(jnp.floor(mixed), 0.0, 255.0)
