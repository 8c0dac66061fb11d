"""Host input throughput, side by side: the grain pipeline, its decode alone on one thread, a
plain PIL loop doing the same work on one thread, and tf.data (where TensorFlow is installed).

Three workloads: (a) a JPEG folder streamed at its own small size (CIFAR-10 at 32 px, eval
geometry, no cache); (b) 224-px Inception random resized crops from larger JPEGs (a folder
that `make_big_jpegs` writes: CIFAR images upscaled to 500x375 with noise); (c) the 32-px
images of (a) decoded in memory, batched by grain vs by `loader.ArrayBatches`. Each row gives
img/s (wall) and img per CPU-second of this process (all its threads): on a shared machine the
second is the steadier per-core figure.
"""

import glob
import os
import time
from collections.abc import Callable

import numpy as np
from absl import logging
from PIL import Image

from jaxcls.data import images, loader, sources

INCEPTION = ((0.08, 1.0), (3 / 4, 4 / 3))


def default_big_dir() -> str:
    """Where --input_only keeps its generated JPEGs unless told (--input_big): a cache folder,
    $XDG_CACHE_HOME/jaxcls/big_jpegs or ~/.cache/jaxcls/big_jpegs, not the current folder."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "jaxcls", "big_jpegs")


def make_big_jpegs(cifar_dir: str, out_dir: str, count: int = 2000,
                   size: tuple[int, int] = (500, 375), seed: int = 0) -> list[str]:
    """Writes `count` JPEGs of `size` to out_dir/<class>/ (kept if already there): CIFAR
    train images upscaled bicubic, plus Gaussian noise (sigma 8) so they carry fine detail."""
    paths = sorted(glob.glob(os.path.join(out_dir, "*", "*.jpg")))
    if len(paths) >= count:
        return paths[:count]
    classes = sorted(os.listdir(os.path.join(cifar_dir, "train")))
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        c = classes[i % len(classes)]
        src = os.path.join(cifar_dir, "train", c, f"{i // len(classes):04d}.jpg")
        big = np.asarray(Image.open(src).convert("RGB").resize(size, Image.BICUBIC), np.float32)
        big = np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)
        os.makedirs(os.path.join(out_dir, c), exist_ok=True)
        paths.append(os.path.join(out_dir, c, f"{i:05d}.jpg"))
        Image.fromarray(big).save(paths[-1], quality=90)
    logging.info("wrote %d %dx%d JPEGs under %s", count, *size, out_dir)
    return paths


def _timed(name: str, count: int, run: Callable[[], None], cores: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    row = {"method": name, "cores": cores, "images": count, "img_per_s": round(count / wall, 1),
           "img_per_s_per_core": round(count / wall / cores, 1),
           "img_per_cpu_s": round(count / cpu, 1)}
    logging.info("%s", row)
    return row


def _pil_loop(paths: list[str], size: int, random_crop) -> Callable[[], None]:
    """What a plain loop does: full decode to RGB, then the same geometry, one image at a time."""
    def run():
        rng = np.random.default_rng(0)
        for p in paths:
            img = Image.open(p).convert("RGB")
            if random_crop is None:
                np.asarray(images.resize_center_crop(img, size))
            else:
                left, top, w, h = images.random_resized_crop_box(*img.size, *random_crop, rng)
                np.asarray(img.crop((left, top, left + w, top + h)).resize((size, size),
                                                                           Image.BILINEAR))
    return run


def _decode_loop(paths: list[str], size: int, random_crop) -> Callable[[], None]:
    def run():
        rng = np.random.default_rng(0)
        for p in paths:
            images.decode(p, size, 1.0, random_crop, rng)
    return run


def _grain(paths: list[str], size: int, random_crop, threads: int, batch: int
           ) -> Callable[[], None]:
    source = sources.FileSource(paths, np.zeros(len(paths), np.int32), size, 1.0)

    def run():
        it = loader.train_iterator(source, batch, 0, 0, threads, random_crop)
        for _ in range(len(paths) // batch):
            next(it)
    return run


def _in_memory(source: sources.ArraySource, batch: int, count: int, threads: int,
               iterator: Callable) -> Callable[[], None]:
    """`count` examples of batches from a decoded in-memory source through `iterator`
    (loader.train_iterator, which gathers whole batches, or loader.grain_train_iterator)."""
    def run():
        it = iterator(source, batch, 0, num_threads=threads)
        for _ in range(count // batch):
            next(it)
    return run


def _tf_data(paths: list[str], size: int, random_crop, threads: int, batch: int
             ) -> Callable[[], None]:
    import tensorflow as tf

    from jaxcls.data import tf_input

    def decode(i, path):
        data = tf.io.read_file(path)
        if random_crop is None:
            return tf_input.eval_image(data, size, 1.0)
        return tf_input.train_image(data, tf.stack([tf.constant(0, tf.int64), i]), size,
                                    random_crop)

    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    ds = tf.data.Dataset.from_tensor_slices(paths).enumerate().with_options(options)
    ds = ds.map(decode, num_parallel_calls=threads).batch(batch).prefetch(2)

    def run():
        for _ in ds.as_numpy_iterator():
            pass
    return run


def run(cifar_dir: str, big_dir: str, count: int = 2000, threads: int = 2, batch: int = 50
        ) -> dict:
    """Every row of both workloads; tf.data rows only where TensorFlow imports."""
    try:
        import tensorflow  # noqa: F401

        has_tf = True
    except ImportError:
        has_tf = False
    cifar = sorted(glob.glob(os.path.join(cifar_dir, "train", "*", "*.jpg")))[:count]
    if len(cifar) < count:
        raise FileNotFoundError(f"{cifar_dir}/train/<class>/*.jpg: {len(cifar)} files, "
                                f"need {count}")
    big = make_big_jpegs(cifar_dir, big_dir, count)
    result = {"threads": threads, "batch": batch, "tensorflow": has_tf}
    for key, paths, size, crop in (("cifar32_stream", cifar, 32, None),
                                   ("rrc224_from_500x375", big, 224, INCEPTION)):
        for p in paths:  # into the page cache, so the first method timed pays no disk reads
            with open(p, "rb") as f:
                f.read()
        rows = [_timed("pil_loop", count, _pil_loop(paths, size, crop), 1),
                _timed("jaxcls_decode", count, _decode_loop(paths, size, crop), 1),
                _timed(f"grain_{threads}_threads", count,
                       _grain(paths, size, crop, threads, batch), threads)]
        if has_tf:
            rows.append(_timed(f"tf_data_{threads}_threads", count,
                               _tf_data(paths, size, crop, threads, batch), threads))
        result[key] = rows
    # (c) the same 32-px images already decoded in memory (how folders that fit in
    # config.cache_max_gib train): grain element by element vs the whole-batch gather, at a
    # training batch size, over 10 passes so the figures are not timer noise.
    cached, _ = sources.cache_in_memory(sources.FileSource(cifar, np.zeros(count, np.int32),
                                                           32, 1.0), threads)
    n, big_batch = 10 * count, 500
    result["cifar32_in_memory"] = [
        _timed(f"grain_{threads}_threads", n,
               _in_memory(cached, big_batch, n, threads, loader.grain_train_iterator), threads),
        _timed("array_batches", n,
               _in_memory(cached, big_batch, n, threads, loader.train_iterator), 1)]
    return result
