"""Host input: the random resized crop (box statistics, PIL parity, JPEG draft decoding) and
the grain train iterator with it (determinism across workers, epochs and resume)."""

import glob
import os

import numpy as np
import pytest
from PIL import Image

from jaxcls.data import images, loader, sources

CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")
needs_cifar = pytest.mark.skipif(not os.path.isdir(CIFAR), reason="needs ../shared/data/cifar10")
INCEPTION = ((0.08, 1.0), (3 / 4, 4 / 3))


def test_random_resized_crop_box_statistics():
    rng = np.random.default_rng(0)
    width, height = 500, 375
    boxes = np.array([images.random_resized_crop_box(width, height, *INCEPTION, rng)
                      for _ in range(20_000)])
    left, top, w, h = boxes.T
    assert (left >= 0).all() and (top >= 0).all()
    assert (left + w <= width).all() and (top + h <= height).all()
    area = w * h / (width * height)
    aspect = w / h
    # Rounding the side lengths to whole pixels moves area and aspect by under 1%.
    assert area.min() >= 0.08 * 0.99 and area.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.99 and aspect.max() <= 4 / 3 * 1.01
    assert area.min() < 0.085 and area.max() > 0.95  # the whole range is drawn
    # Positions are uniform: the box centre averages to the image centre.
    assert abs((left + w / 2).mean() / width - 0.5) < 0.01
    assert abs((top + h / 2).mean() / height - 0.5) < 0.01
    # On a square image wide and tall boxes fit equally often, and log-aspect is drawn
    # uniformly: its mean is the centre of log(ratio), 0 (standard error ~0.001).
    square = np.array([images.random_resized_crop_box(400, 400, *INCEPTION, rng)[2:]
                       for _ in range(20_000)])
    assert abs(np.log(square[:, 0] / square[:, 1]).mean()) < 0.005


def test_random_resized_crop_box_falls_back_to_a_central_box():
    rng = np.random.default_rng(0)
    # An area of 2-3x the image never fits: after 10 draws, the largest central box whose
    # aspect is clamped into ratio.
    assert images.random_resized_crop_box(100, 10, (2.0, 3.0), (0.75, 4 / 3), rng) == (
        43, 0, 13, 10)
    assert images.random_resized_crop_box(10, 100, (2.0, 3.0), (0.75, 4 / 3), rng) == (
        0, 43, 10, 13)
    assert images.random_resized_crop_box(40, 30, (2.0, 3.0), (0.75, 4 / 3), rng) == (
        0, 0, 40, 30)


def _box_and_rng(seed, width, height):
    """The box `decode` will draw from a generator seeded with `seed`, and that generator."""
    box = images.random_resized_crop_box(width, height, *INCEPTION,
                                         np.random.default_rng(seed))
    return box, np.random.default_rng(seed)


@needs_cifar
def test_crop_of_a_real_jpeg_equals_pil_crop_then_resize():
    path = os.path.join(CIFAR, "train", "cat", "0000.jpg")
    full = Image.open(path).convert("RGB")
    for seed in range(5):
        (left, top, w, h), rng = _box_and_rng(seed, *full.size)
        out = images.decode(path, 24, random_crop=INCEPTION, rng=rng)
        ref = full.crop((left, top, left + w, top + h)).resize((24, 24), Image.BILINEAR)
        np.testing.assert_array_equal(out, np.asarray(ref))
        # A cached array gets the same crop.
        cached = images.decode(np.asarray(full), 24, random_crop=INCEPTION,
                               rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(cached, np.asarray(ref))


def test_crop_box_is_drawn_on_the_exif_oriented_image(tmp_path):
    from PIL import ImageOps

    arr = np.random.default_rng(0).integers(0, 256, (20, 48, 3), np.uint8)  # 48 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: 20 wide, 48 high
    path = str(tmp_path / "rotated.jpg")
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert upright.size == (20, 48)
    for seed in range(5):
        (left, top, w, h), rng = _box_and_rng(seed, 20, 48)
        out = images.decode(path, 12, random_crop=INCEPTION, rng=rng)
        ref = upright.crop((left, top, left + w, top + h)).resize((12, 12), Image.BILINEAR)
        np.testing.assert_array_equal(out, np.asarray(ref))


@needs_cifar
def test_draft_decoding_of_a_large_jpeg_stays_close_to_full_decoding(tmp_path):
    # A 500x375 photo-like JPEG; a crop resized to 32 px lets libjpeg decode at 1/2-1/8 scale.
    small = Image.open(os.path.join(CIFAR, "train", "dog", "0001.jpg")).convert("RGB")
    path = str(tmp_path / "big.jpg")
    small.resize((500, 375), Image.BICUBIC).save(path, quality=95)
    full = Image.open(path).convert("RGB")
    scales = []
    for seed in range(8):
        (left, top, w, h), rng = _box_and_rng(seed, 500, 375)
        out = images.decode(path, 32, random_crop=INCEPTION, rng=rng).astype(int)
        ref = np.asarray(full.crop((left, top, left + w, top + h)).resize((32, 32),
                                                                          Image.BILINEAR))
        scales.append(min(w, h) // 32)
        # libjpeg's 1/8 scale is the 8x8 block mean, a narrower filter than PIL's: a few
        # levels apart on average (measured 0.9-6.2) ...
        error = np.abs(out - ref)[2:-2, 2:-2].mean()
        assert error < 8.0, seed
        # ... and aligned: a one-pixel shift in any direction is further from the reference.
        for axis in (0, 1):
            for shift in (-1, 1):
                assert error < np.abs(np.roll(out, shift, axis) - ref)[2:-2, 2:-2].mean(), seed
    assert max(scales) >= 8  # some crops went through a reduced-scale decode


def _cifar_files(n):
    paths = sorted(glob.glob(os.path.join(CIFAR, "train", "*", "000[0-9].jpg")))[:n]
    return sources.FileSource(paths, np.arange(len(paths)) % 10, 16, 1.0)


def _batches(it, n):
    return [next(it) for _ in range(n)]


def _by_index(batches):
    """Images of a run of batches keyed by example index (one epoch has each index once)."""
    return {int(i): img for b in batches for i, img in zip(b["index"], b["image"], strict=True)}


@needs_cifar
def test_crops_are_deterministic_across_workers_and_new_each_epoch(tmp_path):
    source = _cifar_files(8)
    bad = str(tmp_path / "bad.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    source.paths[3] = bad
    inline = _batches(loader.train_iterator(source, 4, seed=1, num_threads=1,
                                            random_crop=INCEPTION), 4)
    workers = _batches(loader.train_iterator(source, 4, seed=1, num_workers=2, num_threads=4,
                                             random_crop=INCEPTION), 4)
    for a, b in zip(inline, workers, strict=True):
        for k in ("image", "label", "index", "bad"):
            np.testing.assert_array_equal(a[k], b[k])
    epoch1, epoch2 = _by_index(inline[:2]), _by_index(inline[2:])
    assert sorted(epoch1) == sorted(epoch2) == list(range(8))
    good = [i for i in range(8) if i != 3]
    assert all(not np.array_equal(epoch1[i], epoch2[i]) for i in good)  # a new crop per epoch
    assert not epoch1[3].any() and not epoch2[3].any()  # the unreadable file: zeros, flagged
    flagged = {int(i) for b in inline for i in b["index"][b["bad"]]}
    assert flagged == {3}
    other = _batches(loader.train_iterator(source, 4, seed=2, num_threads=1,
                                           random_crop=INCEPTION), 2)
    assert any(not np.array_equal(epoch1[i], _by_index(other)[i]) for i in good)  # seed matters


@needs_cifar
def test_resume_mid_epoch_gives_the_same_crops():
    source = _cifar_files(12)
    it = loader.train_iterator(source, 4, seed=0, num_threads=2, random_crop=INCEPTION)
    _batches(it, 4)  # into the second epoch
    state = it.get_state()
    expected = _batches(it, 3)
    resumed = loader.train_iterator(source, 4, seed=0, num_threads=2, random_crop=INCEPTION)
    resumed.set_state(state)
    for a, b in zip(expected, _batches(resumed, 3), strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["image"], b["image"])


@needs_cifar
def test_eval_geometry_unchanged_without_random_crop():
    source = _cifar_files(6)
    source.size, source.crop_frac = 24, 0.875
    batches = list(loader.eval_batches(source, 4, num_threads=1))
    train = next(loader.train_iterator(source, 6, seed=0, num_threads=1))
    seen = []
    for b in (*batches, train):
        pad = b.get("pad", np.zeros(len(b["index"]), bool))
        for i, img in zip(b["index"][~pad], b["image"][~pad], strict=True):
            ref = images.resize_center_crop(Image.open(source.paths[i]).convert("RGB"), 24,
                                            0.875)
            np.testing.assert_array_equal(img, np.asarray(ref))
            seen.append(int(i))
    assert sorted(seen) == sorted(2 * list(range(6)))  # each once in eval, once in train


def test_input_config_errors_name_the_key():
    import importlib.util

    from jaxcls import train
    from tests.conftest import tiny_config

    cases = [({"backend": "torch"}, "config.input.backend='torch'"),
             ({"shuffle_buffer": 0}, "config.input.shuffle_buffer=0"),
             ({"backend": "tf"}, "is not tfds:NAME")]
    for overrides, message in cases:
        config = tiny_config()
        config.input.update(overrides)
        with pytest.raises(ValueError, match=message):
            train.validate(config)
    config = tiny_config()
    with config.unlocked():
        config.input.prefetch = 4
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['input.prefetch'\]"):
        train.validate(config)
    if importlib.util.find_spec("tensorflow") is None:
        config = tiny_config(dataset="tfds:mnist")
        config.input.backend = "tf"
        with pytest.raises(ImportError, match="pip install"):
            train.validate(config)


# ---------------------------------------------------------------------------------------------
# tf.data backend (runs where TensorFlow is installed)


def _tfds_sample(data_dir):
    """A 40 + 10 example TFDS dataset of CIFAR JPEGs, written as TFRecord files."""
    import tensorflow_datasets as tfds

    classes = sorted(os.listdir(os.path.join(CIFAR, "train")))

    def files(split, per_class):
        return [(os.path.join(CIFAR, split, c, f"{i:04d}.jpg"), k)
                for k, c in enumerate(classes) for i in range(per_class)]

    class JaxclsCifarSample(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "label": tfds.features.ClassLabel(names=classes)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(files("train", 4)),
                    "test": self._generate_examples(files("test", 1))}

        def _generate_examples(self, items):
            for i, (path, label) in enumerate(items):
                yield i, {"image": path, "label": label}

    JaxclsCifarSample(data_dir=data_dir).download_and_prepare()
    return "jaxcls_cifar_sample"


@needs_cifar
def test_tf_backend_batches_crops_resume_and_training(tmp_path):
    pytest.importorskip("tensorflow")
    from jaxcls import train
    from jaxcls.data import tf_input
    from tests.conftest import tiny_config

    name = _tfds_sample(str(tmp_path / "tfds"))
    ds = tf_input.tfds_dataset(name, str(tmp_path / "tfds"), 16, 1.0, "train", "test", 64)
    assert (len(ds.train), len(ds.eval), ds.num_classes) == (40, 10, 10)

    # Train batches: the grain loader's dict; crops fixed by the seed, new every epoch.
    def run(seed, n):
        return _batches(loader.train_iterator(ds.train, 8, seed, random_crop=INCEPTION), n)

    a, b = run(0, 6), run(0, 6)
    assert set(a[0]) == {"image", "label", "bad", "index"}
    assert a[0]["image"].shape == (8, 16, 16, 3) and a[0]["image"].dtype == np.uint8
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
    assert not np.array_equal(np.stack([x["image"] for x in a[:5]]),
                              np.stack([x["image"] for x in run(1, 5)]))
    # Resume mid-epoch (and across the epoch boundary): the next batches equal the run's.
    it = loader.train_iterator(ds.train, 8, 0, random_crop=INCEPTION)
    _batches(it, 3)
    resumed = loader.train_iterator(ds.train, 8, 0, random_crop=INCEPTION)
    resumed.set_state(it.get_state())
    resumed.start_prefetch()
    for x, y in zip(a[3:], _batches(resumed, 3), strict=True):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])

    # Eval: every example once, padded tail, the PIL geometry within JPEG decoder rounding.
    batches = list(loader.eval_batches(ds.eval, 4))
    assert len(batches) == 3 and sum(int(x["pad"].sum()) for x in batches) == 2
    images_ = np.concatenate([x["image"][~x["pad"]] for x in batches])
    labels = np.concatenate([x["label"][~x["pad"]] for x in batches])
    classes = sorted(os.listdir(os.path.join(CIFAR, "test")))
    for img, label in zip(images_, labels, strict=True):
        path = os.path.join(CIFAR, "test", classes[label], "0000.jpg")
        ref = images.resize_center_crop(Image.open(path).convert("RGB"), 16)
        assert np.abs(img.astype(int) - np.asarray(ref)).mean() < 2.0

    # Training through train.run, stopped and resumed: the iterator state is checkpointed.
    config = tiny_config(dataset=f"tfds:{name}", data_dir=str(tmp_path / "tfds"),
                         batch_size=8, num_steps=3, final_eval=False)
    config.input.backend = "tf"
    workdir = str(tmp_path / "run")
    assert train.run(config, workdir)["steps"] == 3
    config.num_steps, config.final_eval = 6, True
    summary = train.run(config, workdir)
    assert summary["steps"] == 6 and 0.0 <= summary["final_eval"]["accuracy"] <= 1.0
