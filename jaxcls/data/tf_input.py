"""Optional tf.data input (`config.input.backend = "tf"`) for TFDS datasets stored as TFRecord.

Yields the same numpy batch dicts as the grain loader (`image` uint8, `label`, `bad`, `index`,
and `pad` in eval). Train: an Inception-style crop from `sample_distorted_bounding_box` with the
same scale and ratio ranges (JPEGs decode only the crop window), or the eval geometry. Needs
TensorFlow, which jaxcls does not depend on: imported only when this backend is chosen.

Resume: the iterator's state is (epoch, batches consumed in that epoch). Every epoch's file
order, shuffle and crops are seeded from (seed, epoch), so on restore the epoch is rebuilt and
its consumed records are skipped before decoding: the next batches equal an uninterrupted run's.
"""

import importlib.util
import json

import jax

from jaxcls.data import images, sources

PIP = "pip install 'tensorflow>=2.16'  (or: pip install -e '.[tf]')"


def require_tensorflow() -> None:
    """Fails naming the pip command when TensorFlow is not installed."""
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(f"config.input.backend='tf' needs TensorFlow, which is not installed: "
                          f"{PIP}; or use the default backend 'grain' (no TensorFlow)")


class TfdsSplit:
    """One TFDS split read through tf.data; this process reads only its own even share."""

    def __init__(self, name: str, split: str, data_dir: str | None, size: int,
                 crop_frac: float, shuffle_buffer: int = 10_000):
        import tensorflow_datasets as tfds

        self.builder = tfds.builder(name, data_dir=data_dir)
        self.split, self.size, self.crop_frac = split, size, crop_frac
        self.shuffle_buffer = shuffle_buffer
        self.local_split = tfds.even_splits(split, jax.process_count(),
                                            drop_remainder=False)[jax.process_index()]
        self.num_examples = self.builder.info.splits[split].num_examples
        self.local_examples = self.builder.info.splits[self.local_split].num_examples

    def __len__(self) -> int:
        return self.num_examples

    def name(self, i: int) -> str:
        return f"{self.split} record {i}"

    def records(self, shuffle_seed: int | None, num_threads: int):
        """This process's records as a tf.data.Dataset of {"image": encoded bytes, "label"}."""
        import tensorflow as tf
        import tensorflow_datasets as tfds

        options = tf.data.Options()
        options.deterministic = True  # same order for the same seed: what resume relies on
        options.threading.private_threadpool_size = num_threads
        ds = self.builder.as_dataset(
            split=self.local_split, shuffle_files=shuffle_seed is not None,
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, options=options))
        return ds.with_options(options)


def tfds_dataset(name: str, data_dir: str | None, size: int, crop_frac: float,
                 train_split: str, eval_split: str, shuffle_buffer: int) -> sources.Dataset:
    """A TFDS dataset prepared as TFRecord files (tfds's default), read with tf.data."""
    require_tensorflow()
    try:
        train, held = (TfdsSplit(name, s, data_dir, size, crop_frac, shuffle_buffer)
                       for s in (train_split, eval_split))
    except Exception as e:
        raise FileNotFoundError(
            f"TFDS dataset {name!r} (splits {train_split!r}/{eval_split!r}) is not prepared "
            f"under data_dir={data_dir or '~/tensorflow_datasets'!r} ({type(e).__name__}: "
            f"{e}). Prepare it once: tfds build {name} --data_dir=DIR") from None
    label = train.builder.info.features["label"]
    class_names = list(label.names) if hasattr(label, "names") else [
        str(i) for i in range(label.num_classes)]
    return sources.Dataset(train, held, class_names)


# ---------------------------------------------------------------------------------------------
# geometry in TensorFlow (the same choices as images.py)


def eval_image(data, size: int, crop_frac: float):
    """Encoded image -> uint8 [size, size, 3]: shorter side to size / crop_frac, centre crop."""
    import tensorflow as tf

    img = tf.io.decode_image(data, channels=3, expand_animations=False)
    hw = tf.cast(tf.shape(img)[:2], tf.float32)
    short = round(size / crop_frac)
    new = tf.maximum(tf.cast(tf.round(hw * short / tf.reduce_min(hw)), tf.int32), short)
    img = tf.image.resize(img, new, "bilinear", antialias=True)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    return _to_uint8(img[top:top + size, left:left + size])


def train_image(data, seed, size: int, random_crop: images.RandomCrop):
    """Encoded image -> uint8 [size, size, 3]: a crop of area fraction in scale and aspect in
    ratio (10 attempts, then the whole image), resized bilinear with antialiasing."""
    import tensorflow as tf

    (scale, ratio) = random_crop

    def box(shape):
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed, min_object_covered=0.0,
            aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        return begin, extent

    def jpeg():  # decode only the crop window
        begin, extent = box(tf.io.extract_jpeg_shape(data))
        window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
        return tf.io.decode_and_crop_jpeg(data, window, channels=3)

    def other():
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        begin, extent = box(tf.shape(img))
        return tf.slice(img, begin, extent)

    crop = tf.cond(tf.io.is_jpeg(data), jpeg, other)
    return _to_uint8(tf.image.resize(crop, (size, size), "bilinear", antialias=True))


def _to_uint8(img):
    import tensorflow as tf

    img = tf.clip_by_value(tf.round(tf.cast(img, tf.float32)), 0, 255)
    return tf.cast(img, tf.uint8)


# ---------------------------------------------------------------------------------------------
# iterators


class TrainIterator:
    """Endless numpy batches; `get_state`/`set_state` (bytes) as grain's checkpoint handler
    expects of a non-grain iterator, so `checkpoint.Checkpointer` saves it unchanged."""

    def __init__(self, split: TfdsSplit, local_batch: int, seed: int, num_threads: int,
                 random_crop: images.RandomCrop | None):
        self.split, self.local_batch, self.seed = split, local_batch, seed
        self.num_threads, self.random_crop = num_threads, random_crop
        self.batches_per_epoch = split.local_examples // local_batch
        if self.batches_per_epoch == 0:
            raise ValueError(f"{split.split!r} has {split.local_examples} examples on this "
                             f"process, fewer than one batch of {local_batch}")
        self.epoch, self.batch = 0, 0
        self._it = None

    def _epoch_batches(self):
        import tensorflow as tf

        epoch_seed = (self.seed * 1_000_003 + self.epoch) % 2**31  # distinct per (seed, epoch)
        skip = self.batch * self.local_batch
        ds = self.split.records(epoch_seed, self.num_threads)
        ds = ds.shuffle(self.split.shuffle_buffer, seed=epoch_seed,
                        reshuffle_each_iteration=False)
        ds = ds.enumerate().skip(skip)  # skipped records are never decoded
        size, crop_frac, random_crop = self.split.size, self.split.crop_frac, self.random_crop

        def decode(i, record):
            if random_crop is None:
                image = eval_image(record["image"], size, crop_frac)
            else:
                seed = tf.stack([tf.constant(epoch_seed, tf.int64), i])
                image = train_image(record["image"], seed, size, random_crop)
            return {"image": image, "label": tf.cast(record["label"], tf.int32),
                    "bad": tf.constant(False), "index": tf.cast(i, tf.int32)}

        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(self.local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        return ds.as_numpy_iterator()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch, self._it = self.epoch + 1, 0, None
        if self._it is None:
            self._it = self._epoch_batches()
        out = next(self._it)
        self.batch += 1
        return out

    def get_state(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "batch": self.batch}).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        self.epoch, self.batch, self._it = s["epoch"], s["batch"], None

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore: start reading ahead."""
        if self._it is None and self.batch < self.batches_per_epoch:
            self._it = self._epoch_batches()


def train_iterator(split: TfdsSplit, local_batch: int, seed: int, num_threads: int = 4,
                   random_crop: images.RandomCrop | None = None) -> TrainIterator:
    """Endless batches of this process's share, reshuffled every epoch; checkpointable. `index`
    is an example's position in this process's order of the epoch."""
    require_tensorflow()
    return TrainIterator(split, local_batch, seed, num_threads, random_crop)


def eval_batches(split: TfdsSplit, global_batch: int, num_threads: int = 4):
    """Each example once, in ceil(N / global_batch) batches on every process; `pad=True` marks
    the zero examples that fill the tail (as `loader.eval_batches`)."""
    import tensorflow as tf

    require_tensorflow()
    local_batch = global_batch // jax.process_count()
    num_batches = -(-split.num_examples // global_batch)
    size, crop_frac = split.size, split.crop_frac

    def decode(i, record):
        return {"image": eval_image(record["image"], size, crop_frac),
                "label": tf.cast(record["label"], tf.int32), "bad": tf.constant(False),
                "index": tf.cast(i, tf.int32), "pad": tf.constant(False)}

    ds = split.records(None, num_threads).enumerate()
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    blank = {"image": tf.zeros((size, size, 3), tf.uint8), "label": tf.constant(0),
             "bad": tf.constant(False), "index": tf.constant(-1), "pad": tf.constant(True)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat())
    ds = ds.take(num_batches * local_batch).batch(local_batch).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()
