"""See the training augmentation: N training images, each beside K augmented views.

    python -m jaxcls.augviz --config=configs/cifar10_resnet18.py --out=grid.png [--n=8 --views=6]

Row i: training example i as the host decodes it, then its views after the train steps
0..K-1 augmented it: the same `augment.apply`, the same rng derivation (`train.seed_rngs`,
`steps.step_rngs`) and the same batch-mates (the N images form the batch, so mixup/CutMix
partners are the neighbouring rows), de-normalised for display. From a notebook:
`augviz.grid(config, n, views, seed)` returns the image as a uint8 array.

With a leading random_resized_crop, each view first gets its own crop of the original file,
made by the loader's own decode function (`sources.decode`) with a per-view generator.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from jaxcls import cli, steps, train, writers
from jaxcls.data import augment, sources


def define_flags() -> None:
    """The command's flags (defined as its main runs, so importing this module defines
    none and other commands' flags never clash with them)."""
    config_flags.DEFINE_config_file("config", None, "A config file from configs/.",
                                    lock_config=True)
    flags.DEFINE_string("out", None, "Where to write the grid (.png or .jpg).")
    flags.DEFINE_integer("n", 8, "Training images (rows).")
    flags.DEFINE_integer("views", 6,
                         "Augmented views per image (columns after the original).")
    flags.DEFINE_integer("seed", 0,
                         "Which training images: a permutation of the train split.")
    flags.DEFINE_integer("zoom", 0,
                         "Upscale each cell this many times (0: to at least 128 px).")
    flags.mark_flags_as_required(["config", "out"])


def sample_views(config: ml_collections.ConfigDict, n: int = 8, views: int = 6, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(originals uint8 [n, S, S, 3], views uint8 [n, views, S, S, 3]) of n training images."""
    train.validate(config)
    pipeline = augment.from_config(config)
    config = config.copy_and_resolve_references()
    config.cache_max_gib = 0.0  # decode only the n images shown
    dataset = sources.create(config)
    if n > len(dataset.train):
        raise ValueError(f"--n={n} is more than the {len(dataset.train)} training images of "
                         f"{config.dataset!r}")
    chosen = np.random.default_rng(seed).permutation(len(dataset.train))[:n]
    examples = [dataset.train[int(i)] for i in chosen]
    originals = np.stack([e["image"] for e in examples])
    labels = jnp.asarray([e["label"] for e in examples], jnp.int32)
    logging.info("%d images from %s, %d views each", n, config.dataset, views)

    @jax.jit
    def view(rng, images):
        images, _ = augment.apply(pipeline, rng, images, labels, dataset.num_classes)
        std = jnp.asarray(pipeline.std) * 255.0
        mean = jnp.asarray(pipeline.mean) * 255.0
        return jnp.clip(jnp.round(images * std + mean), 0, 255).astype(jnp.uint8)

    decoded = [originals] * views
    if pipeline.host_crop is not None:  # the loader's random resized crop, a new box per view
        decoded = [np.stack([
            sources.decode(dataset.train.record(int(i)), config.image_size, 1.0,
                           pipeline.host_crop, np.random.default_rng((seed, step, int(i))))["image"]
            for i in chosen]) for step in range(views)]
    _, step_rng = train.seed_rngs(config.seed)
    out = [view(steps.step_rngs(step_rng, step)[0], jnp.asarray(decoded[step]))
           for step in range(views)]
    return originals, np.stack([np.asarray(v) for v in out], axis=1)


def grid(config: ml_collections.ConfigDict, n: int = 8, views: int = 6, seed: int = 0,
         zoom: int = 0, gap: int = 2) -> np.ndarray:
    """The grid as uint8 [rows, columns, 3]: original then `views` augmentations per row, each
    cell upscaled `zoom` times (0: to at least 128 px), white gaps between cells."""
    originals, augmented = sample_views(config, n, views, seed)
    cells = np.concatenate([originals[:, None], augmented], axis=1)  # [n, 1 + views, S, S, 3]
    size = cells.shape[2]
    zoom = zoom or max(1, -(-128 // size))
    cells = cells.repeat(zoom, axis=2).repeat(zoom, axis=3)
    step = size * zoom + gap
    out = np.full((n * step - gap, (views + 1) * step - gap, 3), 255, np.uint8)
    for i in range(n):
        for j in range(views + 1):
            out[i * step:i * step + size * zoom, j * step:j * step + size * zoom] = cells[i, j]
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    image = grid(f.config, f.n, f.views, f.seed, f.zoom)
    Image.fromarray(image).save(f.out)
    logging.info("wrote %s (%dx%d): %d images, original then %d views per row", f.out,
                 image.shape[1], image.shape[0], f.n, f.views)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
