"""Image ops against PIL on real photos (scikit-learn's samples, CIFAR-10 JPEGs); the random
policies against their own draws."""

import colorsys
import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage
from sklearn.datasets import load_sample_images

from jaxcls.data import image_ops, policies

CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")
GEOMETRY = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """8 real photos as uint8 [8, 32, 32, 3]: 32-px crops of scikit-learn's two sample photos
    (they ship with the dependencies, so these tests run everywhere), the last 4 replaced by
    CIFAR-10 test JPEGs where ../shared/data/cifar10 exists."""
    crops = []
    for photo in load_sample_images().images:  # china.jpg, flower.jpg: 427 x 640
        for y, x in ((40, 60), (200, 300), (100, 450), (300, 150)):
            tile = Image.fromarray(photo[y:y + 96, x:x + 96]).resize((32, 32), Image.BOX)
            crops.append(np.asarray(tile))
    if os.path.isdir(CIFAR):
        classes = sorted(os.listdir(os.path.join(CIFAR, "test")))[:4]
        files = [sorted(glob.glob(os.path.join(CIFAR, "test", c, "*.jpg")))[0] for c in classes]
        crops[4:] = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    return np.stack(crops)


def _ours(op, photos, *traced, **static) -> np.ndarray:
    """op on each photo under jit + vmap, with `traced` parameters, as in training."""
    run = jax.jit(jax.vmap(functools.partial(op, **static), (0,) + (None,) * len(traced)))
    return np.asarray(run(jnp.asarray(photos, jnp.float32), *traced))


def _pil(fn, photos) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(p)), np.float32) for p in photos])


def test_lut_ops_equal_pil_exactly(photos):
    # Exact: each is an integer table, computed in integer-valued float32 like PIL's uint8 LUT.
    timm_solarize_add = [min(255, v + 60) if v < 128 else v for v in range(256)] * 3
    cases = [(image_ops.invert, (), ImageOps.invert),
             (image_ops.equalize, (), ImageOps.equalize),
             (image_ops.solarize_add, (60,), lambda im: im.point(timm_solarize_add)),
             (image_ops.grayscale, (), lambda im: im.convert("L").convert("RGB")),
             (image_ops.hflip, (), lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
             (image_ops.vflip, (), lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM))]
    cases += [(image_ops.solarize, (t,), lambda im, t=t: ImageOps.solarize(im, t))
              for t in (0, 77.5, 128)]
    cases += [(image_ops.posterize, (b,), lambda im, b=b: ImageOps.posterize(im, b))
              for b in (1, 4, 8)]
    for op, args, reference in cases:
        np.testing.assert_array_equal(_ours(op, photos, *args), _pil(reference, photos),
                                      err_msg=f"{op.__name__}{args}")


def test_autocontrast_equals_pil_up_to_its_float64_rounding(photos):
    # PIL evaluates int(v * 255 / span - lo * 255 / span) in float64, which lands just below an
    # exact integer result for some spans (e.g. span 25: 25 * 10.2 -> 254.99999999999997);
    # ours is the exact integer floor. So: equal, except one level lower in PIL exactly where
    # (v - lo) * 255 / span is an integer.
    ours, theirs = _ours(image_ops.autocontrast, photos), _pil(ImageOps.autocontrast, photos)
    lo, hi = photos.min((1, 2), keepdims=True), photos.max((1, 2), keepdims=True)
    exact_integer = ((photos.astype(int) - lo) * 255 % np.maximum(hi - lo, 1)) == 0
    assert set(np.unique(ours - theirs)) <= {0.0, 1.0}
    assert np.all(exact_integer[ours != theirs])
    assert np.mean(ours != theirs) < 0.02


@pytest.mark.parametrize("name", ["brightness", "color", "contrast", "sharpness"])
def test_enhance_ops_equal_pil_exactly_under_jit(photos, name):
    # Exact: PIL blends in C float (product rounded, then added, truncated), which float32
    # reproduces; image_ops.blend keeps XLA from fusing the two roundings into one multiply-add
    # (1.7 and 1.1 would then differ by a level on ~3% of values). jit + vmap with the factor
    # traced, as in training.
    enhancer = getattr(ImageEnhance, name.capitalize())
    run = jax.jit(jax.vmap(getattr(image_ops, name), (0, None)))
    for factor in (0.1, 0.6, 1.1, 1.7, 1.9):
        expected = _pil(lambda im, f=factor: enhancer(im).enhance(f), photos)
        np.testing.assert_array_equal(run(jnp.asarray(photos, jnp.float32), factor), expected,
                                      err_msg=f"{name}({factor})")


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_geometry_matches_pil_transform(photos, interpolation):
    # Nearest: PIL maps pixel centres through 16.16 fixed point (float64 with bilinear); ours is
    # float32. Only a coordinate within ~1e-3 px of a pixel edge could land differently; none
    # does at these magnitudes, so nearest must be exact. Bilinear: PIL blends in float64 and
    # truncates, so a blend that is exactly an integer (common with "round" fractions such as
    # 0.4 px) may land one level apart: <= 1 level on <= 3% of pixels (1.9% measured).
    resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}[interpolation]
    fill = (10, 20, 30)
    cases = [(image_ops.rotate, 30.0, lambda im: im.rotate(30.0, resample, fillcolor=fill)),
             (image_ops.rotate, -17.3, lambda im: im.rotate(-17.3, resample, fillcolor=fill)),
             (image_ops.rotate, 90.0, lambda im: im.rotate(90.0, resample, fillcolor=fill))]
    for op, value, matrix in [(image_ops.shear_x, 0.3, (1, 0.3, 0, 0, 1, 0)),
                              (image_ops.shear_y, -0.27, (1, 0, 0, -0.27, 1, 0)),
                              (image_ops.translate_x, 5.4, (1, 0, -5.4, 0, 1, 0)),
                              (image_ops.translate_y, -7.0, (1, 0, 0, 0, 1, 7.0))]:
        cases.append((op, value, lambda im, m=matrix: im.transform(
            im.size, Image.AFFINE, m, resample, fillcolor=fill)))
    for op, value, reference in cases:
        ours = _ours(op, photos, value, fill=fill, interpolation=interpolation)
        diff = np.abs(ours - _pil(reference, photos))
        limit, fraction = (0, 0.0) if interpolation == "nearest" else (1, 3e-2)
        assert diff.max() <= limit and np.mean(diff > 0) <= fraction, (op.__name__, value,
                                                                        np.mean(diff > 0))


@pytest.mark.parametrize("factor", [-0.3, 0.1, 0.5])
def test_hue_matches_colorsys_round_trip(photos, factor):
    # torchvision's adjust_hue on uint8 tensors: RGB / 255 -> HSV, hue + factor mod 1, -> RGB,
    # * 255.999 truncated. Reference in float64 (colorsys); ours float32: <= 1 level.
    def reference(rgb):
        h, s, v = colorsys.rgb_to_hsv(*(rgb / 255.0))
        return np.floor(np.array(colorsys.hsv_to_rgb((h + factor) % 1.0, s, v)) * 255.999)

    expected = np.apply_along_axis(reference, -1, photos[:2].astype(np.float64))
    diff = np.abs(_ours(image_ops.hue, photos[:2], factor) - expected)
    assert diff.max() <= 1 and np.mean(diff > 0) < 0.01


@pytest.mark.parametrize("sigma,kernel_size", [(0.8, 3), (1.5, 5), (2.0, 9)])
def test_gaussian_blur_matches_torchvision_definition(photos, sigma, kernel_size):
    # torchvision blurs uint8 as float with a normalised Gaussian kernel and reflect padding
    # (scipy's "mirror"), then rounds. PIL's GaussianBlur is a different (box) approximation, so
    # the reference is that definition in float64; ours float32: <= 1 level where the float64
    # result is within float32 error of a .5 tie.
    x = np.arange(kernel_size) - kernel_size // 2
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    expected = photos.astype(np.float64)
    for axis in (1, 2):
        expected = ndimage.correlate1d(expected, kernel, axis=axis, mode="mirror")
    ours = _ours(image_ops.gaussian_blur, photos, sigma, kernel_size=kernel_size)
    diff = np.abs(ours - np.round(expected))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3


# ---- policies ----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("name", "fill", "interpolation"))
def _by_name(img: jax.Array, name: str, param, fill=128, interpolation="nearest") -> jax.Array:
    """The image op `name` called on its own, as a user would (jitted: eager dispatch of every
    primitive is slower than one compile per op)."""
    fn = getattr(image_ops, name)
    if name in ("identity", "autocontrast", "equalize", "invert"):
        return fn(img)
    if name in GEOMETRY:
        return fn(img, param, fill, interpolation)
    return fn(img, param)


def test_apply_op_equals_each_image_op_under_jit_and_vmap(photos):
    # One batch, a different op and traced parameter per example: the vectorised slot must
    # reproduce every op exactly. (Nearest: a bilinear blend sitting exactly on an integer may
    # truncate differently once XLA fuses it under jit; PIL parity of bilinear is tested above.)
    params = {"posterize": 3.0, "solarize": 100.0, "solarize_add": 40.0, "brightness": 1.7,
              "color": 0.3, "contrast": 1.4, "sharpness": 0.2, "rotate": -25.0,
              "shear_x": 0.2, "shear_y": -0.15, "translate_x": 6.0, "translate_y": -3.0}
    names = policies.OPS
    imgs = jnp.asarray(np.concatenate([photos, photos]), jnp.float32)
    ops = jnp.array([policies.OP_ID[n] for n in names])
    values = jnp.array([params.get(n, 0.0) for n in names], jnp.float32)
    run = jax.jit(jax.vmap(lambda x, o, p: policies.apply_op(x, o, p, (5, 6, 7))))
    out = run(imgs, ops, values)
    for i, name in enumerate(names):
        expected = _by_name(imgs[i], name, values[i], (5, 6, 7))
        np.testing.assert_array_equal(out[i], expected, err_msg=name)


def _policy_and_choices(photos, policy, choose, seed=0):
    keys = jax.random.split(jax.random.key(seed), len(photos))
    imgs = jnp.asarray(photos, jnp.float32)
    return jax.jit(jax.vmap(lambda k, x: (policy(k, x), choose(k, x))))(keys, imgs), imgs


def _rand_augment_and_draws(key, img, magnitude, std):
    # Nearest geometry: chains are then exact (see above). prob=1: every slot applies an op.
    return (policies.rand_augment(key, img, 2, magnitude, std, prob=1.0, interpolation="nearest"),
            policies.choose_rand_augment(key, 2, magnitude, std, 1.0, *img.shape[:2]))


# One compiled RandAugment (magnitude and std traced) shared by the tests below.
_RAND_AUGMENT = jax.jit(jax.vmap(_rand_augment_and_draws, (0, 0, None, None)))


def _chain(img: jax.Array, ops, params, interpolation="nearest") -> jax.Array:
    for op, param in zip(np.asarray(ops), np.asarray(params), strict=True):
        img = _by_name(img, policies.OPS[op], param, 128, interpolation)
    return img


@pytest.mark.parametrize("name", ["rand_augment", "trivial_augment_wide",
                                  "auto_augment_imagenet"])
def test_policy_equals_the_chain_of_ops_it_drew(photos, name):
    imgs = jnp.asarray(np.repeat(photos, 2, axis=0), jnp.float32)
    keys = jax.random.split(jax.random.key(0), len(imgs))
    if name == "rand_augment":
        out, (ops, params) = _RAND_AUGMENT(keys, imgs, 9.0, 0.5)
    else:
        policy, choose = {"trivial_augment_wide": (policies.trivial_augment_wide,
                                                   policies.choose_trivial_augment_wide),
                          "auto_augment_imagenet": (policies.auto_augment_imagenet,
                                                    policies.choose_auto_augment_imagenet)}[name]
        out, (ops, params) = jax.jit(jax.vmap(lambda k, x: (policy(k, x), choose(k))))(keys, imgs)
    for i in range(len(imgs)):
        np.testing.assert_array_equal(out[i], _chain(imgs[i], ops[i], params[i]),
                                      err_msg=f"example {i}: {ops[i]}")
    assert len({tuple(np.asarray(o)) for o in ops}) > 1  # independent draws per example


@pytest.mark.slow  # (CI budget)
def test_augmix_mixes_the_chains_it_drew(photos):
    # AugMix runs bilinear geometry: this also checks the jitted bilinear slot.
    (out, (ops, params, original, chains)), imgs = _policy_and_choices(
        photos[:4], policies.augmix, lambda k, x: policies.choose_augmix(k, x.shape[:2]))
    np.testing.assert_allclose(original + chains.sum(-1), 1.0, rtol=1e-5)
    for i in range(4):
        mixed = original[i] * imgs[i] + sum(
            weight * _chain(imgs[i], chain_ops, chain_params, "bilinear")
            for chain_ops, chain_params, weight in zip(ops[i], params[i], chains[i], strict=True))
        # A bilinear blend exactly on an integer may truncate either side under jit (see
        # above), and a mix of floats summed in another order likewise: <= 1 level.
        assert np.abs(out[i] - np.floor(mixed)).max() <= 1


def test_rand_augment_magnitude_zero_with_neutral_ops_is_identity(photos):
    # At level 0, rotate/shear/translate/enhance/solarize/solarize_add are the identity (the
    # others are not: posterize keeps 4 bits, autocontrast/equalize/invert change the image).
    neutral = {policies.OP_ID[n] for n in ("identity", "rotate", "shear_x", "shear_y",
                                            "translate_x", "translate_y", "brightness", "color",
                                            "contrast", "sharpness", "solarize", "solarize_add")}
    imgs = jnp.asarray(np.repeat(photos, 2, axis=0), jnp.float32)
    keys = jax.random.split(jax.random.key(4), len(imgs))  # a seed drawing 8 neutral chains
    out, (ops, _) = _RAND_AUGMENT(keys, imgs, 0.0, 0.0)
    is_neutral = np.array([set(np.asarray(o).tolist()) <= neutral for o in ops])
    assert is_neutral.sum() >= 4 and (~is_neutral).sum() >= 4
    np.testing.assert_array_equal(out[is_neutral], imgs[is_neutral])
    assert all(np.any(out[i] != imgs[i]) for i in np.flatnonzero(~is_neutral))


def test_rand_augment_draws():
    # timm semantics: ops uniform with replacement over the 15 "increasing" ops, each kept with
    # probability `prob`; the level is magnitude + N(0, std) clipped to [0, 10]. Binomial
    # tolerances below are > 4 standard deviations over 4096 x 2 draws.
    keys = jax.random.split(jax.random.key(2), 4096)
    choose = jax.jit(jax.vmap(lambda k, std: policies.choose_rand_augment(k, 2, 9.0, std, 0.5,
                                                                          32, 32),
                              (0, None)))
    ops, params = (np.asarray(a) for a in choose(keys, 0.0))
    counts = np.bincount(ops.ravel(), minlength=len(policies.OPS))
    assert abs(counts[policies.OP_ID["identity"]] / ops.size - 0.5) < 0.025
    chosen = counts[[policies.OP_ID[n] for n in policies.RAND_INCREASING_OPS]] / ops.size
    np.testing.assert_allclose(chosen, 0.5 / 15, atol=0.01)
    rotations = np.abs(params[ops == policies.OP_ID["rotate"]])
    np.testing.assert_allclose(rotations, 27.0, rtol=1e-6)  # timm: 9 / 10 * 30 degrees
    noisy_ops, noisy = (np.asarray(a) for a in choose(keys, 0.5))
    np.testing.assert_array_equal(noisy_ops, ops)  # same rng, same ops: only levels move
    # Levels back from |degrees| / 3 and |shear| / 0.03: ~800 draws, mean within 4.5 standard
    # errors of 9 (clipping at 10 moves it by 0.004), std of N(9, 0.5) clipped at 10 is 0.49.
    levels = np.concatenate([np.abs(noisy[noisy_ops == policies.OP_ID["rotate"]]) / 3.0] + [
        np.abs(noisy[noisy_ops == policies.OP_ID[n]]) / 0.03 for n in ("shear_x", "shear_y")])
    assert abs(levels.mean() - 9.0) < 0.08 and abs(levels.std() - 0.49) < 0.06


def test_policy_parameter_tables():
    # Values from timm's level functions at m=9 and torchvision's augmentation spaces.
    def timm(name, sign=1.0):
        return float(policies.timm_param(policies.OP_ID[name], 9.0, sign, 32, 40))

    assert [timm(n) for n in ("posterize", "solarize", "solarize_add", "shear_x")] == \
        pytest.approx([1.0, 26.0, 99.0, 0.27])
    assert timm("translate_x") == pytest.approx(0.405 * 40)
    assert timm("contrast", -1.0) == pytest.approx(0.19)
    assert timm("color") == pytest.approx(1.81)
    tv = policies._space(31, 0.99, 135.0, 0.99, 8, 6, (32.0, 32.0))
    np.testing.assert_array_equal(tv["posterize"][0][[0, 2, 3, 30]], [8, 8, 7, 2])
    assert tv["rotate"][0][-1] == 135.0 and tv["solarize"][0][0] == 255.0
    first = [(op, p, round(float(v), 4)) for op, p, v in zip(
        policies._AA_OPS[0], policies._AA_PROBS[0], policies._AA_VALUES[0], strict=True)]
    assert first == [(policies.OP_ID["posterize"], pytest.approx(0.4), 4.0),
                     (policies.OP_ID["rotate"], pytest.approx(0.6), 30.0)]
    assert float(policies.torchvision_param(policies.OP_ID["translate_x"], -7.9)) == -7.0


def test_policies_are_reproducible_and_differ_per_example(photos):
    imgs = jnp.asarray(np.repeat(photos[:1], 16, axis=0), jnp.float32)
    keys = jax.random.split(jax.random.key(3), len(imgs))
    first, again = _RAND_AUGMENT(keys, imgs, 9.0, 0.5)[0], _RAND_AUGMENT(keys, imgs, 9.0, 0.5)[0]
    np.testing.assert_array_equal(first, again)
    assert len({np.asarray(x).tobytes() for x in first}) == len(imgs)  # one draw per example


def test_trivial_augment_and_auto_augment_draws():
    # TrivialAugmentWide: one of its 14 ops uniformly (1/14 +- 0.02 over 4096 draws is > 4
    # standard deviations). AutoAugment: each slot holds the op of its sub-policy or identity,
    # applied at the mean of the slot's probabilities (sub-policies are drawn uniformly): +- 0.035
    # is > 4 standard deviations.
    keys = jax.random.split(jax.random.key(5), 4096)
    ops, _ = jax.jit(jax.vmap(policies.choose_trivial_augment_wide))(keys)
    counts = np.bincount(np.asarray(ops).ravel(), minlength=len(policies.OPS))
    ta = [policies.OP_ID[n] for n in policies.TRIVIAL_AUGMENT_OPS]
    np.testing.assert_allclose(counts[ta] / len(keys), 1 / 14, atol=0.02)
    assert counts.sum() == counts[ta].sum()
    ops, params = (np.asarray(a) for a in jax.jit(jax.vmap(
        policies.choose_auto_augment_imagenet))(keys))
    identity = policies.OP_ID["identity"]
    for slot in range(2):
        names = [policy[slot][0] for policy in policies.IMAGENET_POLICY]
        allowed = {policies.OP_ID[n] for n in names} | {identity}
        assert set(ops[:, slot].tolist()) <= allowed
        mean_prob = np.mean([policy[slot][1] for policy in policies.IMAGENET_POLICY])
        assert abs(np.mean(ops[:, slot] != identity) - mean_prob) < 0.035
    rotations = np.unique(np.abs(params[ops == policies.OP_ID["rotate"]]))
    np.testing.assert_allclose(rotations, [10.0, 80 / 3, 30.0], rtol=1e-6)  # bins 3, 8, 9
