"""See the training augmentation: N training images, each beside K augmented views.

    python -m jaxcls.augviz --config=configs/cifar10_resnet18.py --out=grid.png [--n=8 --views=6]

Row i: training example i as the host decodes it, then its views after the train steps
0..K-1 augmented it: the same `augment.apply`, the same rng derivation (`train.seed_rngs`,
`steps.step_rngs`) and the same batch-mates (the N images form the batch, so mixup/CutMix
partners are the neighbouring rows), de-normalised for display. From a notebook:
`augviz.grid(config, n, views, seed)` returns the image as a uint8 array.

With a leading random_resized_crop, each view first gets its own crop of the original file,
made by the loader's own decode function (`sources.decode`) with a per-view generator.

The command's PNG is labelled: column titles (original, then view k with its train step), row
titles (row number and class name), and on each view mixed by mixup/CutMix its partner row and
lambda (the share of the image itself); `grid(..., labels=True)` draws the same.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image, ImageDraw, ImageFont

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


@dataclasses.dataclass
class Sample:
    originals: np.ndarray  # uint8 [n, S, S, 3], as the host decodes them
    views: np.ndarray  # uint8 [n, views, S, S, 3], after train steps 0..views-1 augmented them
    row_names: list[str]  # each image's class name(s)
    lam: np.ndarray  # [views, n]: share of the image itself; < 1: mixed with row i - 1
    mix_kind: str  # "mixup", "CutMix" or "mixed" (both configured: either)


def sample(config: ml_collections.ConfigDict, n: int = 8, views: int = 6, seed: int = 0
           ) -> Sample:
    """n training images, their augmented views, class names and mixing (see the docstring)."""
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
    names = dataset.class_names
    row_names = [names[int(e["label"])] if np.ndim(e["label"]) == 0 else
                 "+".join(names[k] for k in np.flatnonzero(e["label"])) or "(none)"
                 for e in examples]
    logging.info("%d images from %s, %d views each", n, config.dataset, views)

    @jax.jit
    def view(rng, images):
        # Row i as its own class: the mixed targets then hold each row's lambda (the images
        # do not depend on the labels, so they are those training makes).
        images, targets = augment.apply(pipeline, rng, images, jnp.arange(n), n)
        std = jnp.asarray(pipeline.std) * 255.0
        mean = jnp.asarray(pipeline.mean) * 255.0
        return (jnp.clip(jnp.round(images * std + mean), 0, 255).astype(jnp.uint8),
                jnp.diagonal(targets))

    decoded = [originals] * views
    if pipeline.host_crop is not None:  # the loader's random resized crop, a new box per view
        decoded = [np.stack([
            sources.decode(dataset.train.record(int(i)), config.image_size, 1.0,
                           pipeline.host_crop, np.random.default_rng((seed, step, int(i))))["image"]
            for i in chosen]) for step in range(views)]
    _, step_rng = train.seed_rngs(config.seed)
    out = [view(steps.step_rngs(step_rng, step)[0], jnp.asarray(decoded[step]))
           for step in range(views)]
    mixing = pipeline.mixup
    kind = ("mixed" if mixing.mixup_alpha > 0 and mixing.use_cutmix else
            "CutMix" if mixing.use_cutmix else "mixup")
    return Sample(originals, np.stack([np.asarray(v) for v, _ in out], axis=1), row_names,
                  np.stack([np.asarray(lam) for _, lam in out]), kind)


def sample_views(config: ml_collections.ConfigDict, n: int = 8, views: int = 6, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(originals uint8 [n, S, S, 3], views uint8 [n, views, S, S, 3]) of n training images."""
    s = sample(config, n, views, seed)
    return s.originals, s.views


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, OSError):
        return ImageFont.load_default()


def grid(config: ml_collections.ConfigDict, n: int = 8, views: int = 6, seed: int = 0,
         zoom: int = 0, gap: int = 2, labels: bool = False) -> np.ndarray:
    """The grid as uint8 [rows, columns, 3]: original then `views` augmentations per row, each
    cell upscaled `zoom` times (0: to at least 128 px), white gaps between cells. `labels`
    (the command's PNG): column titles (original, view k with its train step), row titles
    (row number and class) and, on each mixed view, its partner row and lambda."""
    return draw(sample(config, n, views, seed), zoom, gap, labels)


def draw(s: Sample, zoom: int = 0, gap: int = 2, labels: bool = False) -> np.ndarray:
    """The grid of `grid` from a `sample`."""
    n, views = s.views.shape[:2]
    cells = np.concatenate([s.originals[:, None], s.views], axis=1)  # [n, 1 + views, S, S, 3]
    size = cells.shape[2]
    zoom = zoom or max(1, -(-128 // size))
    cells = cells.repeat(zoom, axis=2).repeat(zoom, axis=3)
    step = size * zoom + gap
    out = np.full((n * step - gap, (views + 1) * step - gap, 3), 255, np.uint8)
    for i in range(n):
        for j in range(views + 1):
            out[i * step:i * step + size * zoom, j * step:j * step + size * zoom] = cells[i, j]
    return _labelled(out, s, step, size * zoom) if labels else out


def _labelled(body: np.ndarray, s: Sample, step: int, cell: int) -> np.ndarray:
    """`body` with the titles and mixing notes of `grid(labels=True)` drawn on it."""
    font = _font()
    rows = [f"{i + 1}: {name}" for i, name in enumerate(s.row_names)]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = 8 + max(measure.textlength(r, font=font) for r in rows)
    top, line = 20, 14
    canvas = Image.new("RGB", (int(left) + body.shape[1], top + body.shape[0]), "white")
    canvas.paste(Image.fromarray(body), (int(left), top))
    draw = ImageDraw.Draw(canvas)
    titles = ["original"] + [f"view {j + 1} (step {j})" for j in range(s.views.shape[1])]
    for j, title in enumerate(titles):
        draw.text((left + j * step + cell / 2, top / 2), title, fill="black", font=font,
                  anchor="mm")
    for i, row in enumerate(rows):
        draw.text((4, top + i * step + cell / 2), row, fill="black", font=font, anchor="lm")
    n = len(rows)
    for j, i in zip(*np.nonzero(s.lam < 1.0 - 1e-6), strict=True):
        x, y = left + (j + 1) * step, top + i * step + cell
        draw.rectangle((x, y - 2 * line - 2, x + cell - 1, y - 1), fill="black")
        draw.text((x + 3, y - 2 * line - 1), f"{s.mix_kind} with row {(i - 1) % n + 1}",
                  fill="white", font=font)
        draw.text((x + 3, y - line - 1), f"lambda {s.lam[j, i]:.2f}", fill="white", font=font)
    return np.asarray(canvas)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    image = grid(f.config, f.n, f.views, f.seed, f.zoom, labels=True)
    Image.fromarray(image).save(f.out)
    logging.info("wrote %s (%dx%d): %d images, original then %d views per row", f.out,
                 image.shape[1], image.shape[0], f.n, f.views)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
