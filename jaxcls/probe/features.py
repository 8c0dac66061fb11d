"""The penultimate features of any registered model: the input of its top-level `head`."""

import hashlib
import os
import time
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jaxcls import sharding
from jaxcls.data import augment

PROGRESS_EVERY_S = 10.0


def apply_capturing_head_inputs(model: nn.Module, variables: dict, images: jax.Array,
                                **apply_kwargs):
    """(`model.apply(variables, images, **apply_kwargs)`'s output, what its classifier Dense,
    the top-level `head` by the registry's contract, receives, as [N, D] float32)."""
    captured = []

    def intercept(next_fun, args, kwargs, context):
        scope = context.module.scope
        if context.method_name == "__call__" and scope is not None and scope.path == ("head",):
            captured.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(intercept):
        out = model.apply(variables, images, **apply_kwargs)
    if not captured:
        raise ValueError(f"{type(model).__name__} has no top-level `head` module to probe")
    x = captured[-1]
    return out, x.reshape(x.shape[0], -1).astype(jnp.float32)


def head_inputs_and_logits(model: nn.Module, variables: dict, images: jax.Array
                           ) -> tuple[jax.Array, jax.Array]:
    """(what `model`'s classifier Dense, the top-level `head` by the registry's contract,
    receives for `images` (normalised float NHWC) as [N, D] float32, the logits)."""
    logits, x = apply_capturing_head_inputs(model, variables, images, train=False)
    return x, logits.astype(jnp.float32)


def head_inputs(model: nn.Module, variables: dict, images: jax.Array) -> jax.Array:
    """The first of head_inputs_and_logits (under jit, XLA drops the unused head)."""
    return head_inputs_and_logits(model, variables, images)[0]


def sharded_batches(fn: Callable, batch_size: int) -> tuple[Callable, int]:
    """(run, B): `fn(variables, batch)` (arrays out) jitted with the batch split over this
    process's devices, B being `batch_size` rounded up to a multiple of their count;
    `run(variables, chunk)` takes any chunk of up to B rows (zero-padded to B) and returns numpy
    arrays of as many rows as the chunk. Host arrays in, host arrays out: in a multi-process
    run each process computes every batch it is given on its own devices."""
    devices = jax.local_devices()
    mesh = jax.sharding.Mesh(np.array(devices), ("data",),
                             axis_types=(jax.sharding.AxisType.Auto,))
    batch_size = -(-batch_size // len(devices)) * len(devices)
    jitted = jax.jit(fn, in_shardings=(sharding.replicated(mesh), sharding.batch_sharding(mesh)),
                     out_shardings=sharding.batch_sharding(mesh))

    def run(variables, chunk: np.ndarray):
        padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]),
                                                 chunk.dtype)])
        return jax.tree.map(lambda a: np.asarray(a)[:len(chunk)], jitted(variables, padded))

    return run, batch_size


def extract(model: nn.Module, variables: dict, images: np.ndarray, mean: Sequence[float],
            std: Sequence[float], batch_size: int = 256, label: str = "",
            with_logits: bool = False):
    """head_inputs of uint8 images [N, S, S, 3] (normalised by mean/std in [0, 1] units), in
    batches split over this process's devices, with a progress line every 10 s; `with_logits`: the
    pair (features, logits)."""
    run, batch_size = sharded_batches(
        lambda v, x: head_inputs_and_logits(model, v, augment.normalize(x, mean, std)),
        batch_size)
    feats, logits, last, t0 = [], [], time.monotonic(), time.monotonic()
    for s in range(0, len(images), batch_size):
        chunk = images[s:s + batch_size]
        f, z = run(variables, chunk)
        feats.append(f)
        logits.append(z)
        if time.monotonic() - last >= PROGRESS_EVERY_S and s + batch_size < len(images):
            logging.info("features %s: %d/%d images", label, s + len(chunk), len(images))
            last = time.monotonic()
    feats = np.concatenate(feats)
    logging.info("features %s: %d images -> %d dims in %.1f s", label, len(images),
                 feats.shape[1], time.monotonic() - t0)
    return (feats, np.concatenate(logits)) if with_logits else feats


def fingerprint(variables: dict, images: np.ndarray, *extra) -> str:
    """A short hash of the weights, the images and any settings, naming a feature cache."""
    h = hashlib.sha1()
    for leaf in jax.tree.leaves(variables):
        h.update(np.asarray(leaf).tobytes()[:4096])
        h.update(str(np.shape(leaf)).encode())
    h.update(np.ascontiguousarray(images[:: max(len(images) // 256, 1)]).tobytes())
    h.update(repr((images.shape, extra)).encode())
    return h.hexdigest()[:12]


def cached(path: str, key: str, compute) -> np.ndarray:
    """`compute()`, stored at `path` (.npz with its `key`) and read back while the key holds."""
    if os.path.exists(path):
        with np.load(path) as f:
            if str(f["key"]) == key:
                logging.info("features from %s", path)
                return f["features"]
    feats = compute()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    np.savez(path, features=feats, key=np.array(key))
    return feats
