"""Device-side augmentation inside the jitted step: per-example randomness, batched ops."""

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def random_crop(rng: jax.Array, images: jax.Array, padding: int) -> jax.Array:
    """Zero-pads each side by `padding` and takes a random crop of the original size per image."""
    n, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ys, xs = jax.random.randint(rng, (2, n), 0, 2 * padding + 1)

    def crop(img, y, x):
        return jax.lax.dynamic_slice(img, (y, x, 0), (h, w, img.shape[-1]))

    return jax.vmap(crop)(padded, ys, xs)


def random_flip(rng: jax.Array, images: jax.Array) -> jax.Array:
    """Mirrors each image left-right with probability 1/2."""
    flip = jax.random.bernoulli(rng, 0.5, (images.shape[0], 1, 1, 1))
    return jnp.where(flip, images[:, :, ::-1], images)


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float],
              dtype=jnp.float32) -> jax.Array:
    """uint8 [0, 255] -> (x / 255 - mean) / std, with mean and std in [0, 1] units."""
    mean = jnp.asarray(mean, jnp.float32) * 255.0
    std = jnp.asarray(std, jnp.float32) * 255.0
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def train_augment(rng: jax.Array, images: jax.Array, crop_padding: int, flip: bool) -> jax.Array:
    """The foundation's train-time ops, on uint8 images: random crop with padding, then flip."""
    crop_rng, flip_rng = jax.random.split(rng)
    if crop_padding > 0:
        images = random_crop(crop_rng, images, crop_padding)
    if flip:
        images = random_flip(flip_rng, images)
    return images
