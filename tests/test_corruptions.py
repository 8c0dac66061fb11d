"""Common corruptions (jaxcls.robustness) against their reference formulas on real photos, and
`python -m jaxcls.robustness` end to end on a tiny run.

The PyPI `imagecorruptions` package does not install here (it is not in the package index this
project uses, and its 1.1.2 release needs OpenCV and a scikit-image older than the current one),
so the checks are ported: each deterministic corruption is recomputed in the test with the
reference's own operations (scipy.ndimage for scikit-image's gaussian and zoom, PIL for BOX
resizes and JPEG, colorsys for the HSV round trip), and each random one is checked against the
statistics of its formula.
"""

import colorsys
import io
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_python, tiny_config
from PIL import Image
from scipy import ndimage
from sklearn.datasets import load_sample_images

from jaxcls import train
from jaxcls.data import augment
from jaxcls.robustness import benchmark, corruptions


@pytest.fixture(scope="module")
def photos():
    """Two real photos (scikit-learn's china and flower) as 32 x 32 crops, CIFAR-sized."""
    out = []
    for img in load_sample_images().images:
        crop = Image.fromarray(img[100:300, 100:300]).resize((32, 32), Image.BILINEAR)
        out.append(np.asarray(crop))
    return np.stack(out)


def _apply(images, name, severity, seed=0):
    fn = jax.jit(lambda k, x: corruptions.corrupt(k, x, name, severity))
    return np.asarray(fn(jax.random.key(seed), jnp.asarray(images, jnp.float32)))


def test_parameters_follow_image_size_and_bad_names_are_named():
    assert corruptions.params("gaussian_noise", 1, 32, 32) == 0.04  # CIFAR-10-C
    assert corruptions.params("gaussian_noise", 1, 224, 224) == 0.08  # ImageNet-C
    assert corruptions.params("jpeg_compression", 5, 127, 64) == 40
    assert len(corruptions.BENCHMARK) == 15 and len(corruptions.EXTRA) == 4
    with pytest.raises(ValueError, match="unknown corruption 'fogg'.*fog"):
        corruptions.get("fogg")
    with pytest.raises(ValueError, match="severity=6"):
        corruptions.params("fog", 6, 32, 32)
    assert corruptions.parse_names("all") == list(corruptions.BENCHMARK)
    assert corruptions.parse_names("fog, snow") == ["fog", "snow"]


@pytest.mark.parametrize("severity", [pytest.param(1, marks=pytest.mark.slow), 5])
def test_deterministic_corruptions_equal_the_reference_formulas(photos, severity):
    x = photos.astype(np.float64) / 255.0
    got = {n: _apply(photos, n, severity) for n in corruptions.DETERMINISTIC}

    c = corruptions.params("contrast", severity, 32, 32)
    means = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(got["contrast"], np.clip((x - means) * c + means, 0, 1) * 255,
                               atol=1e-3)

    sigma = corruptions.params("gaussian_blur", severity, 32, 32)
    blurred = np.stack([ndimage.gaussian_filter(im, sigma=(sigma, sigma, 0), mode="nearest")
                        for im in x])
    np.testing.assert_allclose(got["gaussian_blur"], np.clip(blurred, 0, 1) * 255, atol=1e-3)

    def hsv_apply(channel, fn):
        out = np.empty_like(x)
        for idx in np.ndindex(x.shape[:3]):
            hsv = list(colorsys.rgb_to_hsv(*x[idx]))
            hsv[channel] = fn(hsv[channel])
            out[idx] = colorsys.hsv_to_rgb(*hsv)
        return np.clip(out, 0, 1) * 255

    b = corruptions.params("brightness", severity, 32, 32)
    np.testing.assert_allclose(got["brightness"], hsv_apply(2, lambda v: min(max(v + b, 0), 1)),
                               atol=1e-3)
    f, o = corruptions.params("saturate", severity, 32, 32)
    np.testing.assert_allclose(got["saturate"],
                               hsv_apply(1, lambda s: min(max(s * f + o, 0), 1)), atol=1e-3)

    zoomed = []  # ImageNet-C's clipped_zoom: scipy zoom (order 1) of the centre, trimmed
    for im in x.astype(np.float32):
        total = im.copy()
        for z in corruptions.zoom_factors(severity, 32, 32):
            ch = int(np.ceil(32 / z))
            top = (32 - ch) // 2
            big = ndimage.zoom(im[top:top + ch, top:top + ch], (z, z, 1), order=1)
            trim = (big.shape[0] - 32) // 2
            total += big[trim:trim + 32, trim:trim + 32]
        zoomed.append(total / (len(corruptions.zoom_factors(severity, 32, 32)) + 1))
    np.testing.assert_allclose(got["zoom_blur"], np.clip(zoomed, 0, 1) * 255, atol=1e-3)

    radius, alias = corruptions.params("defocus_blur", severity, 32, 32)
    grid = np.arange(-8, 9)
    disk = (grid[None] ** 2 + grid[:, None] ** 2 <= radius ** 2).astype(np.float64)
    g = np.exp(-(np.arange(3) - 1.0) ** 2 / (2 * alias ** 2))
    kernel = ndimage.correlate(disk / disk.sum(), np.outer(g, g) / g.sum() ** 2, mode="mirror")
    np.testing.assert_allclose(corruptions.disk_kernel(radius, alias), kernel, atol=1e-12)
    defocused = np.stack([ndimage.correlate(im, kernel[..., None], mode="mirror") for im in x])
    np.testing.assert_allclose(got["defocus_blur"], np.clip(defocused, 0, 1) * 255, atol=1e-3)

    p = corruptions.params("pixelate", severity, 32, 32)
    q = corruptions.params("jpeg_compression", severity, 32, 32)
    for i, im in enumerate(photos):
        small = Image.fromarray(im).resize((int(32 * p), int(32 * p)), Image.BOX)
        np.testing.assert_array_equal(got["pixelate"][i],
                                      np.asarray(small.resize((32, 32), Image.BOX)))
        buffer = io.BytesIO()
        Image.fromarray(im).save(buffer, "JPEG", quality=q)
        np.testing.assert_array_equal(got["jpeg_compression"][i],
                                      np.asarray(Image.open(buffer)))


def test_pixelate_equals_pil_at_imagenet_size():
    img = load_sample_images().images[1][:224, :224]
    got = _apply(img[None], "pixelate", 3)[0]
    side = int(224 * corruptions.params("pixelate", 3, 224, 224))
    ref = Image.fromarray(img).resize((side, side), Image.BOX).resize((224, 224), Image.BOX)
    np.testing.assert_array_equal(got, np.asarray(ref))


_SLOW_LOW_SEVERITIES = [pytest.param(1, marks=pytest.mark.slow),
                        pytest.param(3, marks=pytest.mark.slow), 5]
_GREY = 0.5  # a mid-grey image: nothing clips at CIFAR-10-C's noise levels


def _grey_noise(name, severity):
    grey = np.full((8, 32, 32, 3), 255 * _GREY, np.float32)
    return _apply(grey, name, severity), corruptions.params(name, severity, 32, 32)


@pytest.mark.parametrize("severity", _SLOW_LOW_SEVERITIES)
def test_noise_statistics_match_the_formulas(severity):
    out, c = _grey_noise("gaussian_noise", severity)
    noise = out / 255.0 - _GREY
    assert abs(noise.mean()) < 0.05 * c and abs(noise.std() / c - 1) < 0.03

    out, c = _grey_noise("speckle_noise", severity)
    assert abs((out / 255.0 / _GREY - 1).std() / c - 1) < 0.03

    out, c = _grey_noise("impulse_noise", severity)
    salt, pepper = (out == 255).mean(), (out == 0).mean()
    assert abs((salt + pepper) / c - 1) < 0.12 and abs(salt / (salt + pepper) - 0.5) < 0.1
    assert np.all((out == 0) | (out == 255) | (out == 255 * _GREY))


@pytest.mark.slow
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_shot_noise_is_poisson_counts(severity):
    out, c = _grey_noise("shot_noise", severity)
    out = out / 255.0
    assert abs(out.mean() - _GREY) < 0.01 and abs(out.var() / (_GREY / c) - 1) < 0.05
    np.testing.assert_allclose(out * c, np.round(out * c), atol=1e-3)  # counts / c


def test_examples_get_their_own_randomness_and_keys_follow_content(photos):
    twice = np.stack([photos[0], photos[0]])
    out = _apply(twice, "gaussian_noise", 3)
    assert not np.allclose(out[0], out[1])
    keys = corruptions.content_keys(0, jnp.asarray(np.stack([photos[0], photos[1], photos[0]])))
    data = jax.random.key_data(keys)
    assert np.array_equal(data[0], data[2]) and not np.array_equal(data[0], data[1])


def test_corrupt_is_an_augment_op(photos):
    pipeline = augment.from_config(tiny_config(image_size=32, augment="corrupt('contrast', 5)"))
    x, _ = augment.apply(pipeline, jax.random.key(0), jnp.asarray(photos), jnp.array([0, 1]), 10)
    expected = augment.normalize(_apply(photos, "contrast", 5), pipeline.mean, pipeline.std)
    np.testing.assert_allclose(np.asarray(x), np.asarray(expected), atol=1e-4)
    random = augment.from_config(tiny_config(image_size=32,
                                             augment="corrupt('contrast', 0, p=0.5)"))
    labels = jnp.zeros(8, jnp.int32)
    batch = jnp.asarray(np.concatenate([photos] * 4))
    y, _ = augment.apply(random, jax.random.key(1), batch, labels, 10)
    candidates = [batch.astype(jnp.float32)] + [_apply(batch, "contrast", s) for s in range(1, 6)]
    candidates = np.stack([augment.normalize(c, random.mean, random.std) for c in candidates])
    matches = np.abs(candidates - np.asarray(y)[None]).max(axis=(2, 3, 4)) < 1e-4  # [6, 8]
    assert matches.any(axis=0).all() and matches[0].any() and matches[1:].any()
    with pytest.raises(ValueError, match="unknown corruption 'blurr'"):
        augment.parse("corrupt('blurr')")
    with pytest.raises(ValueError, match="severity=7"):
        augment.parse("corrupt('fog', 7)")


@pytest.mark.slow
def test_random_corruptions_jit_stay_in_range_and_grow_with_severity():
    """The corruptions no reference test above covers: finite, in [0, 255], and (but for
    elastic and glass blur, whose parameters are not monotone) further from the image at
    severity 5 than at 1."""
    img = np.asarray(Image.fromarray(load_sample_images().images[0]).resize((32, 32)))
    images = jnp.asarray(np.stack([img, img[::-1]]), jnp.float32)
    for name in ("glass_blur", "motion_blur", "snow", "frost", "fog", "elastic_transform",
                 "spatter"):
        change = []
        for severity in (1, 5):
            out = _apply(images, name, severity)
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255, name
            change.append(np.abs(out - np.asarray(images)).mean())
        if name not in ("elastic_transform", "glass_blur"):
            assert change[1] > change[0], (name, change)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("robust") / "run")
    train.run(tiny_config(num_steps=40, eval_every_steps=40, learning_rate=3e-2), workdir)
    return workdir


@pytest.mark.slow  # (CI budget) a 2-epoch-sized run, every corruption
def test_benchmark_end_to_end(trained, tmp_path):
    proc = run_python(
        "import sys; sys.argv = ['jaxcls.robustness', '--workdir=" + trained + "', "
        "'--corruptions=contrast,gaussian_noise', '--severities=1,5', '--baseline=" + trained
        + "']; import runpy; runpy.run_module('jaxcls.robustness', run_name='__main__')",
        devices=2)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    out_dir = benchmark.output_dir(trained, "test")
    with open(os.path.join(out_dir, "metrics.json")) as f:
        result = json.load(f)
    assert result["corruptions"] == ["contrast", "gaussian_noise"]
    assert result["severities"] == [1, 5] and result["parameters"] == "CIFAR-10-C"
    assert result["clean_accuracy"] > 0.5  # the model learned something
    acc = result["accuracy"]
    assert set(acc) == {"contrast", "gaussian_noise"} and set(acc["contrast"]) == {"1", "5"}
    assert acc["contrast"]["5"] < acc["contrast"]["1"] <= result["clean_accuracy"] + 0.02
    cells = [acc[n][s] for n in acc for s in ("1", "5")]
    assert result["mean_corruption_accuracy"] == pytest.approx(np.mean(cells))
    base = result["baseline"]
    assert base["mce"] == pytest.approx(100.0) and base["ce"]["contrast"] == pytest.approx(100.0)
    assert base["relative_mce"] == pytest.approx(100.0)
    for png in ("heatmap.png", "severity.png"):
        assert Image.open(os.path.join(out_dir, png)).size[0] > 200
    # CE against another baseline follows the definition: sum of errors over the baseline's.
    other = dict(result, clean_accuracy=0.9,
                 accuracy={n: {s: 0.5 for s in v} for n, v in acc.items()})
    errors = benchmark.corruption_errors(result, other, ["contrast"], [1, 5])
    expected = 100 * ((1 - acc["contrast"]["1"]) + (1 - acc["contrast"]["5"])) / 1.0
    assert errors["ce"]["contrast"] == pytest.approx(expected)
