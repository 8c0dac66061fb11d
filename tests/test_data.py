"""Data: decoding odd files, folder datasets and their errors, splits, TFDS, loaders, augment."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxcls.data import augment, images, loader, sources
from tests.conftest import tiny_config

CIFAR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "cifar10")


def _save(img: Image.Image, path, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kw)


def _gradient(mode_size=(20, 12)):
    w, h = mode_size
    return np.add.outer(np.arange(h) * 10, np.arange(w) * 5).astype(np.uint8)


def test_odd_modes_decode_to_rgb(tmp_path):
    base = _gradient()
    rgb = np.stack([base, 255 - base, base // 2], -1)
    cases = {
        "gray.png": Image.fromarray(base, "L"),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full_like(base, 128)]), "RGBA"),
        "palette.gif": Image.fromarray(rgb).convert("P"),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "photo.bmp": Image.fromarray(rgb),
        "photo.webp": Image.fromarray(rgb),
    }
    for name, img in cases.items():
        _save(img, str(tmp_path / name), **({"lossless": True} if name.endswith("webp") else {}))
        out = images.load_image(str(tmp_path / name), 12)
        assert out.shape == (12, 12, 3) and out.dtype == np.uint8, name
    gray = images.load_image(str(tmp_path / "gray.png"), 12)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # L -> equal channels
    # 16-bit grayscale scales the full range to 8 bits instead of clipping at 255.
    deep = (base.astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    out = images.load_image(str(tmp_path / "deep.png"), 12)
    expect = np.asarray(images.resize_center_crop(Image.fromarray(base, "L"), 12).convert("RGB"))
    np.testing.assert_allclose(out.astype(int), expect.astype(int), atol=1)


def test_resize_center_crop_matches_pil_reference():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), np.uint8))
    out = np.asarray(images.resize_center_crop(img, 32, crop_frac=0.8))
    ref = img.resize((60, 40), Image.BILINEAR).crop((14, 4, 46, 36))  # short side 40, center 32
    np.testing.assert_array_equal(out, np.asarray(ref))


def _make_folder(root, classes, per_class=4, split="train", size=10):
    rng = np.random.default_rng(0)
    for c in classes:
        for i in range(per_class):
            arr = rng.integers(0, 256, (size, size, 3), np.uint8)
            _save(Image.fromarray(arr), os.path.join(root, split, c, f"{i}.png"))


def test_folder_skips_and_counts_corrupt_files(tmp_path):
    root = str(tmp_path / "ds")
    _make_folder(root, ["cat", "dog"])
    _make_folder(root, ["cat", "dog"], per_class=2, split="test")
    bad_text = os.path.join(root, "train", "cat", "notes.jpg")
    with open(bad_text, "w") as f:
        f.write("this is not a jpeg")
    truncated = os.path.join(root, "train", "dog", "cut.jpg")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    with open(truncated, "r+b") as f:
        f.truncate(100)
    with open(os.path.join(root, "train", "dog", "README.txt"), "w") as f:
        f.write("not an image extension: ignored, not counted")

    # Streaming: the bad files come back flagged (masked out of the batch), not raised.
    ds = sources.folder(root, 8, 1.0, 0.2, 0)
    flagged = [ds.train.name(i) for i in range(len(ds.train)) if ds.train[i]["bad"]]
    assert sorted(flagged) == sorted([bad_text, truncated])
    # Cached (small datasets): decoded once, bad files dropped and reported.
    cfg = tiny_config(dataset=f"folder:{root}")
    cached = sources.create(cfg)
    assert sorted(cached.skipped) == sorted([bad_text, truncated])
    assert len(cached.train) == 8 and len(cached.eval) == 4
    assert cached.class_names == ["cat", "dog"]


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        sources.folder(str(tmp_path / "nowhere"), 8, 1.0, 0.2, 0)
    os.makedirs(tmp_path / "empty" / "train")
    with pytest.raises(ValueError, match="no class sub-folders"):
        sources.folder(str(tmp_path / "empty"), 8, 1.0, 0.2, 0)
    root = str(tmp_path / "ds")
    _make_folder(root, ["cat"])
    os.makedirs(os.path.join(root, "train", "dog"))
    with pytest.raises(ValueError, match="dog.*no image files"):
        sources.folder(root, 8, 1.0, 0.2, 0)
    root2 = str(tmp_path / "ds2")
    _make_folder(root2, ["cat", "dog"])
    _make_folder(root2, ["cat", "cow"], split="val")
    with pytest.raises(ValueError, match="cow"):
        sources.folder(root2, 8, 1.0, 0.2, 0)


def test_folder_without_test_split_holds_out_stratified(tmp_path):
    root = str(tmp_path / "ds")
    _make_folder(root, ["a", "b", "c"], per_class=10)
    ds = sources.folder(root, 8, 1.0, 0.2, 0)
    assert len(ds.train) == 24 and len(ds.eval) == 6
    assert np.bincount(ds.eval.labels).tolist() == [2, 2, 2]
    assert not set(ds.train.paths) & set(ds.eval.paths)


def test_digits_split_is_stratified_and_fixed():
    a, b = sources.digits(16, 0.2, 0), sources.digits(16, 0.2, 0)
    assert len(a.train) == 1437 and len(a.eval) == 360
    np.testing.assert_array_equal(a.eval.images, b.eval.images)
    counts = np.bincount(a.eval.labels)
    assert counts.min() >= 35 and counts.max() <= 37  # ~36 of each digit
    assert a.train.images.shape[1:] == (16, 16, 3) and a.train.images.dtype == np.uint8


@pytest.mark.skipif(not os.path.isdir(CIFAR), reason="needs ../shared/data/cifar10")
def test_real_jpegs_decode_like_pil():
    path = os.path.join(CIFAR, "test", "cat", "0000.jpg")
    np.testing.assert_array_equal(images.load_image(path, 32),
                                  np.asarray(Image.open(path).convert("RGB")))


def test_tfds_source_without_tensorflow():
    import sys

    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        ds = sources.tfds_dataset("mnist", None, 8, 1.0, "train", "test", "image", "label")
        ex = ds.train[3]
    assert ex["image"].shape == (8, 8, 3) and ex["image"].dtype == np.uint8
    assert ds.num_classes == 10 and len(ds.train) == 12
    assert "tensorflow" not in sys.modules


def test_tfds_missing_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build mnist --file_format=array_record"):
        sources.tfds_dataset("mnist", str(tmp_path), 8, 1.0, "train", "test", "image", "label")


def test_eval_batches_cover_every_example_once():
    src = sources.ArraySource(np.zeros((10, 4, 4, 3), np.uint8), np.arange(10))
    batches = list(loader.eval_batches(src, 4, num_threads=1))
    assert len(batches) == 3 and all(len(b["label"]) == 4 for b in batches)
    real = np.concatenate([b["index"][~b["pad"]] for b in batches])
    assert sorted(real.tolist()) == list(range(10))
    assert sum(int(b["pad"].sum()) for b in batches) == 2


def test_train_iterator_reshuffles_each_epoch_and_restores():
    src = sources.ArraySource(np.zeros((8, 2, 2, 3), np.uint8), np.arange(8))
    it = loader.train_iterator(src, 4, seed=0, num_threads=1)
    epochs = [np.concatenate([next(it)["label"] for _ in range(2)]) for _ in range(2)]
    assert sorted(epochs[0].tolist()) == sorted(epochs[1].tolist()) == list(range(8))
    assert epochs[0].tolist() != epochs[1].tolist()
    state = it.get_state()
    after = next(it)["label"]
    it2 = loader.train_iterator(src, 4, seed=0, num_threads=1)
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["label"], after)


def test_array_batches_gather_whole_batches_that_match_their_labels():
    # The in-memory path: every image arrives with its own label and index, each epoch is a
    # permutation (a batch may straddle two epochs), and the state is the batch count.
    n = 10
    imgs = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    src = sources.ArraySource(imgs, np.arange(n) + 100)
    it = loader.train_iterator(src, 4, seed=3, num_threads=1)
    assert isinstance(it, loader.ArrayBatches)
    batches = [next(it) for _ in range(5)]  # 20 examples = exactly 2 epochs
    idx = np.concatenate([b["index"] for b in batches])
    for b in batches:
        np.testing.assert_array_equal(b["image"][:, 0, 0, 0], b["index"])
        np.testing.assert_array_equal(b["label"], b["index"] + 100)
        assert b["image"].dtype == np.uint8 and not b["bad"].any()
    assert sorted(idx[:n].tolist()) == sorted(idx[n:].tolist()) == list(range(n))
    assert idx[:n].tolist() != idx[n:].tolist()
    assert it.get_state() == {"array_batches": 5}
    with pytest.raises(ValueError, match="ArrayBatches"):
        it.set_state({"next_index": 3})


def _pixels(spec: str) -> augment.Pipeline:
    """A pipeline whose normalisation is the identity, so outputs are pixel values."""
    return augment.Pipeline(augment.parse(spec), mean=(0.0,) * 3, std=(1 / 255,) * 3)


def test_random_crop_is_a_window_of_the_padded_image():
    # Each output is one 6x6 window of the zero-padded image (pixel values are unique, 1..108,
    # so the window is unambiguous), and over 500 examples every one of the 5 x 5 offsets
    # occurs at a roughly uniform rate: a fixed centre crop would fail both.
    n = 500
    img = jnp.arange(1, 6 * 6 * 3 + 1, dtype=jnp.int32).reshape(1, 6, 6, 3)
    imgs = jnp.broadcast_to(img, (n, 6, 6, 3))
    out, _ = augment.apply(_pixels("crop(2)"), jax.random.key(0), imgs, jnp.zeros(n, int), 2)
    padded = np.pad(np.asarray(img[0]), ((2, 2), (2, 2), (0, 0)))
    windows = {(y, x): padded[y:y + 6, x:x + 6] for y in range(5) for x in range(5)}
    counts = dict.fromkeys(windows, 0)
    for o in np.asarray(out):
        hits = [k for k, w in windows.items() if np.array_equal(w, o)]
        assert len(hits) == 1, "crop is not a 6x6 window of the padded image"
        counts[hits[0]] += 1
    assert min(counts.values()) >= 5 and max(counts.values()) <= 40, counts  # mean 20


def test_flip_rate_and_per_example_independence():
    imgs = jnp.broadcast_to(jnp.arange(4, dtype=jnp.uint8)[None, None, :, None], (4000, 1, 4, 3))
    out, _ = augment.apply(_pixels("flip"), jax.random.key(0), imgs, jnp.zeros(4000, int), 2)
    flipped = np.asarray(out[:, 0, 0, 0] == 3)
    assert abs(flipped.mean() - 0.5) < 0.03  # 4 standard errors of a rate over 4000 draws


def test_normalize_matches_numpy():
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 3, 3), np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    ref = (x / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(augment.normalize(jnp.asarray(x), mean, std), ref, rtol=1e-5)
