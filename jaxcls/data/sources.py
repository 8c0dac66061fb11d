"""Datasets by spec: `digits`, `folder:PATH`, `tfds:NAME`, `synthetic`.

Every source is random access (len + getitem, as grain wants) and yields one example as
`{"image": uint8 [S, S, 3], "label": int32, "bad": bool, "index": int32}` (for
`task='multilabel'` the label is multi-hot float32 [C]); `record(i)` is the same example
undecoded (a path or an array), for the loader to decode with a random crop. An
unreadable image comes back with `bad=True` and a zero image, so a corrupt file in hour 20
costs one masked slot in a batch, not the run.
"""

import dataclasses
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from absl import logging

from jaxcls.data import folders, images


def example(image: np.ndarray, label, index: int, bad: bool = False) -> dict:
    """label: an int class, or multi-hot float [C] for multi-label data."""
    label = np.asarray(label, np.float32 if np.ndim(label) else np.int32)
    return {"image": image, "label": label, "bad": np.bool_(bad), "index": np.int32(index)}


def _labels(labels) -> np.ndarray:
    """int32 [N] class labels, or float32 [N, C] multi-hot ones."""
    labels = np.asarray(labels)
    return labels.astype(np.float32 if labels.ndim == 2 else np.int32)


def decode(record: dict, size: int, crop_frac: float = 1.0,
           random_crop: images.RandomCrop | None = None,
           rng: np.random.Generator | None = None) -> dict:
    """An undecoded record (`source.record(i)`) -> an example; eval geometry, or a random
    resized crop drawn from `rng` when `random_crop` = (scale, ratio) is given."""
    try:
        image = images.decode(record["data"], size, crop_frac, random_crop, rng)
    except Exception:  # PIL raises many types on corrupt input; all mean "skip this file"
        return example(np.zeros((size, size, 3), np.uint8), record["label"], record["index"],
                       True)
    return example(image, record["label"], record["index"])


class _Source:
    """Random access for grain: `record(i)` is the undecoded example {"data": path, encoded
    bytes or array, "label", "index"}; `source[i]` decodes it at the eval geometry."""

    size: int
    crop_frac: float = 1.0

    def __getitem__(self, i: int) -> dict:
        return decode(self.record(i), self.size, self.crop_frac)


class ArraySource(_Source):
    """Images already decoded in memory: uint8 [N, S, S, 3], int labels [N] or multi-hot
    [N, C]."""

    def __init__(self, images_: np.ndarray, labels: np.ndarray, names: Sequence[str] | None = None):
        self.images, self.labels = images_, _labels(labels)
        self.names = names
        self.size = images_.shape[1]

    def __len__(self) -> int:
        return len(self.labels)

    def record(self, i: int) -> dict:
        return {"data": self.images[i], "label": self.labels[i], "index": i}

    def name(self, i: int) -> str:
        return self.names[i] if self.names is not None else f"example {i}"


class FileSource(_Source):
    """Image files decoded on access (by grain's workers when streaming)."""

    def __init__(self, paths: Sequence[str], labels, size: int, crop_frac: float):
        self.paths, self.labels = list(paths), _labels(labels)  # int [N] or multi-hot [N, C]
        self.size, self.crop_frac = size, crop_frac

    def __len__(self) -> int:
        return len(self.paths)

    def record(self, i: int) -> dict:
        return {"data": self.paths[i], "label": self.labels[i], "index": i}

    def name(self, i: int) -> str:
        return self.paths[i]


class TfdsSource(_Source):
    """A `tfds.data_source` split (array_record, no TensorFlow), resized to the config's size.
    With num_labels > 0 the label feature is a list of classes, returned multi-hot."""

    def __init__(self, source, size: int, crop_frac: float, image_key: str, label_key: str,
                 num_labels: int = 0):
        self.source, self.size, self.crop_frac = source, size, crop_frac
        self.image_key, self.label_key, self.num_labels = image_key, label_key, num_labels

    def _label(self, record: dict):
        if not self.num_labels:
            return int(record[self.label_key])
        multi_hot = np.zeros(self.num_labels, np.float32)
        multi_hot[np.asarray(record[self.label_key], np.int64)] = 1.0
        return multi_hot

    def __len__(self) -> int:
        return len(self.source)

    def record(self, i: int) -> dict:
        try:
            record = self.source[i]
            return {"data": np.asarray(record[self.image_key]), "label": self._label(record),
                    "index": i}
        except Exception:  # a corrupt record: decode() turns the None into a bad example
            return {"data": None, "index": i,
                    "label": np.zeros(self.num_labels, np.float32) if self.num_labels else 0}

    def name(self, i: int) -> str:
        return f"record {i}"


class SyntheticSource(_Source):
    """Random pixels and labels (for benchmarks): a small fixed pool, so the host costs nothing."""

    def __init__(self, length: int, size: int, num_classes: int, seed: int = 0, pool: int = 64):
        rng = np.random.default_rng(seed)
        self.pool = rng.integers(0, 256, (pool, size, size, 3), dtype=np.uint8)
        self.labels = rng.integers(0, num_classes, length).astype(np.int32)
        self.size = size

    def __len__(self) -> int:
        return len(self.labels)

    def record(self, i: int) -> dict:
        return {"data": self.pool[i % len(self.pool)], "label": self.labels[i], "index": i}

    def name(self, i: int) -> str:
        return f"synthetic {i}"


@dataclasses.dataclass
class Dataset:
    train: object  # a source as above
    eval: object
    class_names: list[str]
    skipped: list[str] = dataclasses.field(default_factory=list)  # files dropped while caching
    val: object = None  # config.val_fraction of train, never trained on (None: none)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# digits


def digits(size: int, test_fraction: float, seed: int) -> Dataset:
    """scikit-learn's bundled 1,797 8x8 digits, upsampled to size x size RGB, stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    pixels = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    upsampled = np.stack([images.decode(p, size) for p in pixels])
    idx_train, idx_test = train_test_split(np.arange(len(pixels)), test_size=test_fraction,
                                           stratify=data.target, random_state=seed)
    return Dataset(ArraySource(upsampled[idx_train], data.target[idx_train]),
                   ArraySource(upsampled[idx_test], data.target[idx_test]),
                   [str(d) for d in data.target_names])


# ---------------------------------------------------------------------------------------------
# folder:PATH


def _holdout(paths, labels, fraction: float, seed: int, stratify: bool):
    """(train paths, eval paths, train labels, eval labels): a seeded hold-out of `fraction`."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(paths, labels, test_size=fraction,
                                stratify=labels if stratify else None, random_state=seed)
    except ValueError as e:
        raise ValueError(f"config.holdout_fraction={fraction} cannot split {len(paths)} "
                         f"images: {e}") from None


def _class_split(train_dir: str, split_dir: str, class_names: list[str]):
    """(paths, labels) of a split folder, its classes numbered as train's."""
    held = folders.class_files(split_dir)
    missing = folders.check_same_classes(train_dir, class_names, split_dir, list(held))
    if missing:
        logging.warning("%s has no folder for classes %s: they are trained on but not "
                        "evaluated there", split_dir, missing)
    return ([p for c in held for p in held[c]],
            [class_names.index(c) for c in held for _ in held[c]])


def folder(path: str, size: int, crop_frac: float, holdout_fraction: float, seed: int,
           multilabel: bool = False) -> Dataset:
    """An image folder in any layout of `jaxcls.data.folders` (class folders, or labels.csv
    with `multilabel`); without an eval folder, a seeded hold-out of train (stratified by
    class for single-label data)."""
    layout = folders.discover(path, multilabel)
    val = None
    if multilabel:
        class_names, paths, labels = folders.read_labels_csv(layout.train)
        split = lambda d: folders.read_labels_csv(d, class_names)[1:]  # noqa: E731
    else:
        train = folders.class_files(layout.train)
        class_names = list(train)
        paths = [p for c in class_names for p in train[c]]
        labels = [i for i, c in enumerate(class_names) for _ in train[c]]
        split = lambda d: _class_split(layout.train, d, class_names)  # noqa: E731
    if layout.eval is None:
        paths, eval_paths, labels, eval_labels = _holdout(paths, labels, holdout_fraction, seed,
                                                          stratify=not multilabel)
    else:
        eval_paths, eval_labels = split(layout.eval)
    if layout.val is not None:
        val = FileSource(*split(layout.val), size, crop_frac)
    logging.info("%s: %d train / %d eval%s images, %d classes", layout.describe(
        holdout_fraction, seed, stratified=not multilabel), len(paths), len(eval_paths),
        "" if val is None else f" / {len(val)} val", len(class_names))
    return Dataset(FileSource(paths, labels, size, crop_frac),
                   FileSource(eval_paths, eval_labels, size, crop_frac), class_names, val=val)


PROGRESS_EVERY_S = 10.0  # decode (and evaluate) progress lines at most this often


def cache_in_memory(source: FileSource, threads: int = 8) -> tuple[ArraySource, list[str]]:
    """Decodes every file once into an ArraySource; returns it and the unreadable paths."""
    n = len(source)
    out = np.empty((n, source.size, source.size, 3), np.uint8)
    ok = np.ones(n, bool)
    last = time.monotonic()

    def decode(i: int) -> None:
        ex = source[i]
        out[i], ok[i] = ex["image"], not ex["bad"]

    with ThreadPoolExecutor(threads) as pool:  # PIL releases the GIL while decoding
        for k, _ in enumerate(pool.map(decode, range(n)), 1):
            if time.monotonic() - last >= PROGRESS_EVERY_S and k < n:  # long decodes only
                logging.info("decoding %d images into memory: %d/%d", n, k, n)
                last = time.monotonic()
    logging.info("decoded %d images into memory", n)
    bad = [source.paths[i] for i in np.flatnonzero(~ok)]
    keep = np.flatnonzero(ok)
    return ArraySource(out[keep], source.labels[keep], [source.paths[i] for i in keep]), bad


# ---------------------------------------------------------------------------------------------
# tfds:NAME


def tfds_dataset(name: str, data_dir: str | None, size: int, crop_frac: float, train_split: str,
                 eval_split: str, image_key: str, label_key: str, multilabel: bool = False
                 ) -> Dataset:
    """A TFDS dataset prepared as array_record files, read without TensorFlow; `multilabel`:
    the label feature is a Sequence(ClassLabel) (e.g. voc's `labels`), returned multi-hot."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        train = tfds.data_source(name, split=train_split, data_dir=data_dir)
        held = tfds.data_source(name, split=eval_split, data_dir=data_dir)
    except Exception as e:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} (splits {train_split!r}/{eval_split!r}) is not prepared under "
            f"data_dir={data_dir or '~/tensorflow_datasets'!r} ({type(e).__name__}: {e}).\n"
            f"Prepare it once, with TensorFlow installed (pip install -e '.[tf]'):\n"
            f"  tfds build {name} --file_format=array_record --data_dir=DIR\n"
            f"(ImageNet needs its tar files placed in DIR/downloads/manual first), then pass "
            f"--config.data_dir=DIR.") from None
    features = builder.info.features
    if label_key not in features:
        raise ValueError(f"TFDS dataset {name!r} has no feature {label_key!r} "
                         f"(config.tfds_label_key); it has {sorted(features.keys())}")
    feature = features[label_key]
    if multilabel:  # Sequence(ClassLabel): its classes are those of the inner feature
        if not hasattr(feature, "feature"):
            raise ValueError(f"config.task='multilabel': TFDS feature {name}/{label_key} is "
                             f"{type(feature).__name__}, not a Sequence of class labels")
        feature = feature.feature
    class_names = list(feature.names) if hasattr(feature, "names") else [
        str(i) for i in range(feature.num_classes)]
    num_labels = len(class_names) if multilabel else 0
    return Dataset(TfdsSource(train, size, crop_frac, image_key, label_key, num_labels),
                   TfdsSource(held, size, crop_frac, image_key, label_key, num_labels),
                   class_names)


# ---------------------------------------------------------------------------------------------


def _create(config) -> Dataset:
    """The dataset that `config.dataset` names, decoded small datasets held in memory."""
    spec, size = config.dataset, config.image_size
    kind, _, arg = spec.partition(":")
    multilabel = config.task == "multilabel"
    if multilabel and kind not in ("folder", "tfds"):
        raise ValueError(f"config.task='multilabel' needs config.dataset folder:PATH (with "
                         f"labels.csv) or tfds:NAME, not {spec!r}")
    if kind == "digits":
        return digits(size, config.holdout_fraction, config.seed)
    if kind == "synthetic":
        n = config.synthetic_examples
        return Dataset(SyntheticSource(n, size, config.num_classes, 0),
                       SyntheticSource(max(n // 10, 1), size, config.num_classes, 1),
                       [str(i) for i in range(config.num_classes)])
    if kind == "tfds" and arg and config.input.backend == "tf":
        from jaxcls.data import tf_input  # here: tf_input imports this module

        return tf_input.tfds_dataset(arg, config.data_dir or None, size, config.crop_frac,
                                     config.tfds_train_split, config.tfds_eval_split,
                                     config.input.shuffle_buffer)
    if kind == "tfds" and arg:
        return tfds_dataset(arg, config.data_dir or None, size, config.crop_frac,
                            config.tfds_train_split, config.tfds_eval_split, "image",
                            config.tfds_label_key, multilabel)
    if kind == "folder" and arg:
        ds = folder(os.path.expanduser(arg), size, config.crop_frac, config.holdout_fraction,
                    config.seed, multilabel)
        held = [ds.eval] + ([ds.val] if ds.val is not None else [])
        decoded_gib = (len(ds.train) + sum(map(len, held))) * size * size * 3 / 2**30
        if decoded_gib <= config.cache_max_gib:
            ds.train, ds.skipped = cache_in_memory(ds.train)
            ds.eval, bad_eval = cache_in_memory(ds.eval)
            ds.skipped += bad_eval
            if ds.val is not None:
                ds.val, bad_val = cache_in_memory(ds.val)
                ds.skipped += bad_val
            for p in ds.skipped:
                logging.warning("skipping unreadable image %s", p)
            if len(ds.train) == 0:
                raise ValueError(f"no readable training images under {arg!r}")
        return ds
    raise ValueError(f"config.dataset={spec!r} is not one of: digits, folder:PATH, tfds:NAME, "
                     "synthetic")


def create(config) -> Dataset:
    """The dataset `config.dataset` names; `config.val_fraction` of train split off as `val`."""
    ds = _create(config)
    if config.val_fraction > 0 and ds.val is not None:
        raise ValueError(f"config.val_fraction={config.val_fraction}: {config.dataset} has a "
                         f"val folder, which is the val split; set config.val_fraction=0")
    if config.val_fraction > 0:
        ds.train, ds.val = split_off(ds.train, config.val_fraction, config.seed)
    return ds


class _Subset:
    """`source` at `indices`, renumbered 0..len-1 (index and name follow the new numbering)."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices
        if hasattr(source, "labels"):
            self.labels = source.labels[indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return {**self.source[int(self.indices[i])], "index": np.int32(i)}

    def name(self, i: int) -> str:
        return self.source.name(int(self.indices[i]))


def subset(source, indices: np.ndarray):
    """The examples of `source` at `indices`, as a source of the same kind where possible."""
    if isinstance(source, ArraySource):
        names = None if source.names is None else [source.names[i] for i in indices]
        return ArraySource(source.images[indices], source.labels[indices], names)
    if isinstance(source, FileSource):
        return FileSource([source.paths[i] for i in indices], source.labels[indices],
                          source.size, source.crop_frac)
    return _Subset(source, indices)


def split_off(source, fraction: float, seed: int) -> tuple[object, object]:
    """(rest, held): a seeded `fraction` of `source` held out, stratified by class when the
    source knows its labels without decoding (arrays, folders, synthetic)."""
    from sklearn.model_selection import train_test_split

    labels = getattr(source, "labels", None)
    stratify = labels if labels is not None and np.ndim(labels) == 1 else None
    try:
        rest, held = train_test_split(np.arange(len(source)), test_size=fraction,
                                      stratify=stratify, random_state=seed)
    except ValueError as e:
        raise ValueError(f"config.val_fraction={fraction} cannot split {len(source)} training "
                         f"examples: {e}") from None
    return subset(source, np.sort(rest)), subset(source, np.sort(held))
