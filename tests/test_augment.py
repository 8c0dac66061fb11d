"""The augmentation pipeline: the config string, per-example statistics of the random ops,
mixup/CutMix targets, reproducibility, and the wrappers against the image ops they draw for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcls import augviz, train
from jaxcls.data import augment, image_ops, mixup
from tests.conftest import tiny_config


def _pixels(spec: str, **mix) -> augment.Pipeline:
    """A pipeline whose normalisation is the identity, so outputs are pixel values."""
    return augment.Pipeline(augment.parse(spec), mean=(0.0,) * 3, std=(1 / 255,) * 3,
                            mixup=mixup.Mixup(**mix))


def _apply(pipeline, images, labels=None, num_classes=2, seeds=(0,)):
    """(images, targets) as numpy, for each seed if several (one compilation)."""
    labels = jnp.zeros(len(images), jnp.int32) if labels is None else labels
    fn = jax.jit(lambda r, x, y: augment.apply(pipeline, r, x, y, num_classes))
    outs = [jax.tree.map(np.asarray, fn(jax.random.key(s), jnp.asarray(images), labels))
            for s in seeds]
    return outs[0] if len(seeds) == 1 else outs


def _photo(n: int = 1, size: int = 16) -> np.ndarray:
    """Smooth, asymmetric test images (gradients in each channel) as uint8 [n, size, size, 3]."""
    y, x = np.mgrid[:size, :size] / (size - 1)
    base = np.stack([200 * x + 20, 150 * y + 40, 100 * x * y + 80], -1)
    return np.broadcast_to(np.round(base), (n, size, size, 3)).astype(np.uint8)


# ---- the config string -------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [
    "",
    "crop(4)|flip",
    "random_resized_crop(224, scale=(0.08, 1.0), ratio=(3/4, 4/3))|flip|randaugment(2, 9, 0.5)"
    "|erasing(0.25)",
    "random_resized_crop|vflip(0.2)|rotate((-10, 20), interpolation='bilinear', fill=0)"
    "|affine(5, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=3)"
    "|color_jitter(0.4, 0.4, 0.4, hue=0.1, p=0.8)|grayscale|noise(0.05)|blur(3)"
    "|elastic(alpha=20.0, sigma=2.0)|trivialaugment|autoaugment|augmix(severity=2)"
    "|cutout(8)|erasing(fill=0.0)",
])
def test_valid_strings_round_trip(spec):
    ops = augment.parse(spec, image_size=224)
    canonical = augment.to_string(ops)
    assert augment.parse(canonical, image_size=224) == ops
    assert [op.name for op in ops] == [t.strip().split("(")[0] for t in spec.split("|") if t]


def test_parse_fills_every_field():
    # Positional arguments land on the right fields, expressions evaluate, defaults fill in.
    ops = augment.parse("random_resized_crop(224, scale=(0.08, 1.0), ratio=(3/4, 4/3))|flip"
                        "|randaugment(2, 9, 0.5)|erasing(0.25)", image_size=224)
    assert ops == (
        augment.Op("random_resized_crop", {"size": 224, "scale": (0.08, 1.0),
                                           "ratio": (0.75, 4 / 3)}),
        augment.Op("flip", {"p": 0.5}),
        augment.Op("randaugment", {"num_ops": 2, "magnitude": 9.0, "magnitude_std": 0.5,
                                   "fill": None}),
        augment.Op("erasing", {"p": 0.25, "area": (0.02, 1 / 3), "ratio": (0.3, 1 / 0.3),
                               "fill": "random"}))
    assert augment.parse("crop(4)|vflip(0.2)")[1] == augment.Op("vflip", {"p": 0.2})


@pytest.mark.parametrize("spec, message", [
    ("crop(4)|fliplr", r"unknown augment op 'fliplr'.*valid ops: random_resized_crop, crop, "),
    ("crop(4, 5, 'reflect', 7)", r"too many positional arguments; signature: crop\(padding: int"),
    ("crop(padding='4')", r"padding='4' is not int"),
    ("flip(p=1.5)", r"flip\(p=1.5\)': p=1.5 must be in \[0, 1\]"),
    ("rotate(degrees=10, angle=3)", r"unexpected keyword argument 'angle'.*signature: rotate"),
    ("randaugment(2, magnitude=x)", r"'x' is not a literal"),
    ("flip|random_resized_crop", r"'random_resized_crop' is done by the host loader.*first"),
    ("random_resized_crop(160)", r"size must equal config.image_size \(224\)"),
    ("erasing(0.25)|flip", r"'erasing' works on the normalised image.*after 'flip'"),
    ("crop(4)|", r"'' is not of the form name"),
    ("blur(449)", r"kernel_size=449 is too large for 224-pixel images \(at most 447\)"),
])
def test_bad_strings_fail_naming_the_op(spec, message):
    with pytest.raises(ValueError, match=message):
        augment.parse(spec, image_size=224)


def test_train_validate_checks_augment_and_mixup_keys():
    with pytest.raises(ValueError, match=r"config.augment='crop\(1\)\|erasing\|flip'.*'erasing'"):
        train.validate(tiny_config(augment="crop(1)|erasing|flip"))
    config = tiny_config()
    config.mixup.mixup_alpha = 0.8
    config.mixup.cutmix_alpah = 1.0
    with pytest.raises(ValueError, match=r"unknown config.mixup key\(s\) \['cutmix_alpah'\]"):
        train.validate(config)
    with pytest.raises(ValueError, match=r"config.mixup.switch_prob=2.0 must be in \[0, 1\]"):
        train.validate(tiny_config(mixup=dict(switch_prob=2.0)))
    config = tiny_config(augment="random_resized_crop(scale=(0.25, 1.0))|flip")
    train.validate(config)
    assert augment.from_config(config).host_crop == ((0.25, 1.0), (0.75, 4 / 3))
    assert augment.from_config(tiny_config()).host_crop is None


# ---- random ops: per-example statistics --------------------------------------------------------
# Rates over n = 4000 independent draws: 4 standard errors of a proportion is at most
# 4 * sqrt(0.25 / 4000) = 0.032, the tolerance used below.

def test_flip_vflip_grayscale_rates():
    n = 4000
    img = np.zeros((n, 2, 2, 3), np.uint8)
    img[:, 0, 0] = (10, 20, 30)  # one coloured pixel, top left
    out, _ = _apply(_pixels("flip(0.3)|vflip(0.7)|grayscale(0.2)"), img)
    corner = out.reshape(n, 4, 3)[:, :, 0].argmax(1)  # where the pixel went: 0 1 / 2 3
    hflipped, vflipped = corner % 2 == 1, corner >= 2
    grey = np.ptp(out.max(axis=(1, 2)), axis=-1) == 0
    assert abs(hflipped.mean() - 0.3) < 0.032
    assert abs(vflipped.mean() - 0.7) < 0.032
    assert abs(grey.mean() - 0.2) < 0.032
    # Independent draws per example and per op: joint rate = product of the rates.
    assert abs((hflipped & vflipped).mean() - 0.21) < 0.032


def test_erasing_rate_and_rectangle_bounds():
    n, size = 4000, 32
    img = np.full((n, size, size, 3), 100, np.uint8)
    out, _ = _apply(_pixels("erasing(0.25, fill=-7.0)"), img)
    erased = out[..., 0] == -7.0
    hit = erased.any(axis=(1, 2))
    assert abs(hit.mean() - 0.25) < 0.032
    for mask in erased[hit][:300]:
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        h, w = len(rows), len(cols)
        assert mask.sum() == h * w and h < size and w < size  # one solid rectangle that fits
        # Sides are rounded to whole pixels, so some real sides within 0.5 px of h and w must
        # have an area in [0.02, 1/3] of the image and an aspect h/w in [0.3, 1/0.3].
        assert (h + 0.5) * (w + 0.5) >= 0.02 * size**2 and (h - 0.5) * (w - 0.5) <= size**2 / 3
        assert (h + 0.5) / (w - 0.5) >= 0.3 and (h - 0.5) / (w + 0.5) <= 1 / 0.3


def test_erasing_random_fill_is_standard_normal():
    out, _ = _apply(_pixels("erasing(1.0, area=(0.3, 0.3), ratio=(1.0, 1.0))"),
                    np.full((64, 16, 16, 3), 100, np.uint8))
    values = out[out != 100]
    assert values.size > 64 * 200
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1.0) < 0.05


def _pairs(n: int, size: int = 8):
    """Images alternately 0 and 255, labels alternately 0 and 1: example i's partner (i - 1)
    always differs from it."""
    labels = jnp.arange(n, dtype=jnp.int32) % 2
    images = np.asarray(labels)[:, None, None, None] * np.full((n, size, size, 3), 255, np.uint8)
    return images.astype(np.uint8), labels


def test_mixup_lambda_is_beta_per_example_and_mixes_images_and_targets():
    n, alpha = 4000, 0.8
    images, labels = _pairs(n)
    out, targets = _apply(_pixels("", mixup_alpha=alpha), images, labels)
    lam = targets[np.arange(n), np.asarray(labels)]
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)) = 0.0962; standard errors 0.005 and 0.001
    assert abs(lam.mean() - 0.5) < 0.02
    assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.006
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    partner = np.roll(images, 1, axis=0)[:, 0, 0, 0].astype(np.float32)
    expected = lam * images[:, 0, 0, 0] + (1 - lam) * partner
    np.testing.assert_allclose(out[:, 3, 5, 1], expected, atol=1e-3)


def test_cutmix_lambda_is_the_pasted_area_and_switching_rates():
    n = 4000
    images, labels = _pairs(n, size=16)
    pipeline = _pixels("", mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.3, prob=0.9)
    out, targets = _apply(pipeline, images, labels)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    lam = targets[np.arange(n), np.asarray(labels)]  # the own-class target
    own = images[:, 0, 0, 0]
    pixels = out[..., 0].reshape(n, -1)
    binary = np.all((pixels == 0) | (pixels == 255), axis=1)  # no blending: CutMix or unmixed
    unmixed = np.isclose(lam, 1.0, atol=1e-6) & np.all(pixels == own[:, None], axis=1)
    cutmix = binary & ~unmixed
    pasted = np.mean(pixels[cutmix] != own[cutmix, None], axis=1)
    np.testing.assert_allclose(lam[cutmix], 1.0 - pasted, atol=1e-6)  # exactly, up to float32
    # prob 0.9 of mixing at all (a CutMix box can be empty and a mixup lambda ~1, so the
    # unmixed count is an upper bound by a small margin), then CutMix with switch_prob 0.3.
    assert abs(unmixed.mean() - 0.1) < 0.032
    assert abs(cutmix.mean() - 0.9 * 0.3) < 0.032


def test_mixup_settings_from_config_validate_nested_keys():
    base = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "cutmix_minmax": (), "prob": 1.0,
            "switch_prob": 0.5}
    assert not mixup.settings_from({}, base).enabled
    minmax = mixup.settings_from({"cutmix_minmax": (0.2, 0.6)}, base)
    assert minmax.enabled and minmax.use_cutmix and minmax.cutmix_minmax == (0.2, 0.6)
    with pytest.raises(ValueError, match=r"config.mixup.cutmix_minmax=\(0.2,\)"):
        mixup.settings_from({"cutmix_minmax": (0.2,)}, base)
    with pytest.raises(ValueError, match=r"config.mixup.prob='high'"):
        mixup.settings_from({"prob": "high"}, base)


# ---- the whole stack -----------------------------------------------------------------------------

def test_full_stack_reproducible_and_independent_per_example():
    config = tiny_config(image_size=16, augment="crop(4)|flip|randaugment(2, 9, 0.5)|erasing(0.25)",
                         label_smoothing=0.1)
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    pipeline = augment.from_config(config)
    images = _photo(16)  # 16 copies of one image: differences come from the draws alone
    labels = jnp.arange(16, dtype=jnp.int32) % 10
    a, b, c = _apply(pipeline, images, labels, num_classes=10, seeds=(3, 3, 4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    flat = a[0].reshape(16, -1)
    assert len({row.tobytes() for row in flat}) == 16  # every example drew its own
    np.testing.assert_allclose(a[1].sum(1), 1.0, rtol=1e-6)
    assert a[0].dtype == np.float32 and a[1].shape == (16, 10)


# ---- wrappers draw parameters for the image ops ----------------------------------------------

def test_wrappers_with_a_fixed_draw_equal_the_image_op():
    img = _photo(2)
    f32 = jnp.asarray(img, jnp.float32)
    rotated = jax.vmap(lambda x: image_ops.rotate(x, 30.0, 0.0))(f32)
    out, _ = _apply(_pixels("rotate((30, 30), fill=0)"), img)
    np.testing.assert_array_equal(out, rotated)
    # affine builds its own matrix: the same rotation up to float rounding of the matrix, which
    # may move a nearest-neighbour sample across a pixel boundary at exact half-pixel ties.
    out, _ = _apply(_pixels("affine(degrees=(30, 30), fill=0)"), img)
    assert np.mean(out != np.asarray(rotated)) < 0.01
    blurred = jax.vmap(lambda x: image_ops.gaussian_blur(x, 1.5, 5))(f32)
    out, _ = _apply(_pixels("blur(5, sigma=(1.5, 1.5))"), img)
    np.testing.assert_array_equal(out, blurred)
    out, _ = _apply(_pixels("elastic(alpha=0.0, sigma=1.0)"), img)  # no displacement
    np.testing.assert_allclose(out, img, atol=1e-4)


def test_color_jitter_applies_both_orders():
    n = 400
    img = _photo(n)
    out, _ = _apply(_pixels("color_jitter(brightness=(1.5, 1.5), contrast=(0.5, 0.5))"), img)
    x = jnp.asarray(img[0], jnp.float32)
    b_then_c = np.asarray(image_ops.contrast(image_ops.brightness(x, 1.5), 0.5))
    c_then_b = np.asarray(image_ops.brightness(image_ops.contrast(x, 0.5), 1.5))
    assert not np.array_equal(b_then_c, c_then_b)
    first = np.all(out == b_then_c, axis=(1, 2, 3))
    second = np.all(out == c_then_b, axis=(1, 2, 3))
    assert np.all(first | second)
    assert abs(first.mean() - 0.5) < 4 * np.sqrt(0.25 / n)  # random order per example


def test_noise_has_the_configured_std():
    img = np.full((64, 16, 16, 3), 128, np.uint8)
    out, _ = _apply(_pixels("noise(0.05)"), img)
    diff = out - 128.0
    assert abs(diff.mean()) < 0.3 and abs(diff.std() - 0.05 * 255) < 0.3


# ---- augviz --------------------------------------------------------------------------------------

def test_augviz_shows_the_augmented_views_denormalised():
    config = tiny_config(augment="flip(1.0)")  # digits at 8x8: every view is the mirror image
    originals, views = augviz.sample_views(config, n=4, views=2, seed=0)
    assert originals.shape == (4, 8, 8, 3) and views.shape == (4, 2, 8, 8, 3)
    assert originals.std() > 0
    for j in range(2):  # normalise -> de-normalise gives the pixels back exactly
        np.testing.assert_array_equal(views[:, j], originals[:, :, ::-1])
    image = augviz.grid(config, n=4, views=2, zoom=2, gap=1)
    assert image.shape == (4 * 17 - 1, 3 * 17 - 1, 3)
    np.testing.assert_array_equal(image[17:33:2, 17:33:2], views[1, 0])  # row 1, first view
    config = tiny_config(augment="crop(2)")
    _, views = augviz.sample_views(config, n=4, views=2, seed=0)
    assert not np.array_equal(views[:, 0], views[:, 1])  # each view is another train step
    with pytest.raises(ValueError, match=r"--n=5000 is more than the 1437 training images"):
        augviz.sample_views(config, n=5000)


def test_augviz_labels_rows_columns_and_mixed_views():
    config = tiny_config(augment="")  # mixup only: a view is lam * itself + (1 - lam) * row i-1
    config.mixup.update(mixup_alpha=1.0, prob=1.0)
    s = augviz.sample(config, n=4, views=2, seed=0)
    assert s.mix_kind == "mixup" and all(name in "0123456789" for name in s.row_names)
    assert ((s.lam > 0) & (s.lam < 1)).all() and s.lam.shape == (2, 4)
    partner = np.roll(s.originals, 1, axis=0).astype(np.float64)
    for j in range(2):
        lam = s.lam[j][:, None, None, None]
        expected = lam * s.originals + (1 - lam) * partner
        assert np.abs(s.views[:, j] - expected).max() <= 1.0  # the reported lambda and partner
    bare = augviz.draw(s, zoom=16, gap=2)
    image = augviz.draw(s, zoom=16, gap=2, labels=True)
    top, left = image.shape[0] - bare.shape[0], image.shape[1] - bare.shape[1]
    assert top == 20 and left > 8
    assert (image[:top] < 128).any() and (image[top:, :left] < 128).any()  # titles drawn
    cell = 8 * 16
    # Each mixed cell carries a black band of notes at its bottom; the original column none.
    band = image[top + cell - 20:top + cell - 2, left + 130 + 4:left + 130 + cell - 4]
    assert (band == 0).mean() > 0.5
    np.testing.assert_array_equal(image[top:top + cell, left:left + cell], bare[:cell, :cell])
