"""Host input pipeline on grain: per-process shards of uint8 batches, and global device arrays."""

import functools
import sys

import grain
import jax
import numpy as np
from absl import flags

from jaxcls import defaults
from jaxcls.data import images, sources, tf_input

BACKENDS = ("grain", "tf")


def check_input_config(config) -> None:
    """Fails at start on an unknown `config.input.*` key or a backend that cannot run."""
    unknown = sorted(set(config.input.keys()) - set(defaults.get_config().input.keys()))
    if unknown:
        raise ValueError(f"unknown config key(s) {['input.' + k for k in unknown]}; valid keys "
                         f"are listed in jaxcls/defaults.py")
    if config.input.backend not in BACKENDS:
        raise ValueError(f"config.input.backend={config.input.backend!r}: use one of {BACKENDS}")
    if config.input.shuffle_buffer <= 0:
        raise ValueError(f"config.input.shuffle_buffer={config.input.shuffle_buffer} must be "
                         f"positive")
    if config.input.backend == "tf":
        if not config.dataset.startswith("tfds:"):
            raise ValueError(f"config.input.backend='tf' reads TFDS datasets; config.dataset="
                             f"{config.dataset!r} is not tfds:NAME (use backend 'grain')")
        tf_input.require_tensorflow()


def _read_options(num_threads: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(num_threads, 2))


class _Records:
    """`source` as undecoded records, so decoding (and cropping) happens in a map after them."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        return self.source.record(i)


def _decode_cropped(record: dict, rng: np.random.Generator, size: int,
                    random_crop: images.RandomCrop) -> dict:
    return sources.decode(record, size, 1.0, random_crop, rng)


class _ClassBalanced(grain.MapDataset):
    """Endless draws from `parent`: position k picks a class uniformly, then one of its examples
    uniformly, with a generator seeded by (seed, k). A pure function of the position, so a
    restored iterator replays the same draws, and workers need no shared state."""

    def __init__(self, parent: grain.MapDataset, labels: np.ndarray, seed: tuple[int, ...]):
        super().__init__(parent)
        self._members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self._seed = seed

    def __len__(self) -> int:
        return sys.maxsize

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        rng = np.random.default_rng((*self._seed, index))
        members = self._members[rng.integers(len(self._members))]
        return self._parent[int(members[rng.integers(len(members))])]


class ArrayBatches(grain.DatasetIterator):
    """Endless shuffled batches of an in-memory `sources.ArraySource` by index gather: one
    numpy fancy-index per batch, no per-example Python, so 32-px data costs the host almost
    nothing. The endless stream is epoch e's permutation (seeded by (seed, e)) after epoch
    e-1's; global batch k is stream positions [k*B, (k+1)*B), of which this process takes its
    rows. The state is k alone (JSON, for grain's checkpoint handler), so a restored
    iterator continues exactly, on any number of processes."""

    def __init__(self, source, local_batch: int, seed: int):
        super().__init__()
        self._images, self._labels = source.images, source.labels
        self._local, self._seed = local_batch, seed
        self._global = local_batch * jax.process_count()
        self._offset = local_batch * jax.process_index()
        self._batch = 0
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = np.random.default_rng((self._seed, epoch)).permutation(
                len(self._labels))
        return self._perms[epoch]

    def __next__(self) -> dict:
        n = len(self._labels)
        pos = self._batch * self._global + self._offset + np.arange(self._local)
        epoch, within = np.divmod(pos, n)
        idx = np.empty(self._local, np.int64)
        for e in np.unique(epoch):  # at most a few epochs per batch (more if B > N)
            sel = epoch == e
            idx[sel] = self._perm(int(e))[within[sel]]
        self._batch += 1
        return {"image": self._images[idx], "label": self._labels[idx],
                "bad": np.zeros(self._local, bool), "index": idx.astype(np.int32)}

    def get_state(self) -> dict:
        return {"array_batches": self._batch}

    def set_state(self, state: dict) -> None:
        if "array_batches" not in state:
            raise ValueError(f"data-iterator state {state} was not saved by an in-memory "
                             "ArrayBatches iterator (the run's data source changed)")
        self._batch = int(state["array_batches"])


def train_iterator(source, local_batch: int, seed: int, num_workers: int = 0,
                   num_threads: int = 4, random_crop: images.RandomCrop | None = None,
                   class_balanced: bool = False) -> grain.DatasetIterator:
    """Endless batches of this process's rows of each global batch, reshuffled every epoch.

    Process p of n gets rows [p * local_batch, (p + 1) * local_batch) of every global batch, so
    the global batches, and the iterator state (a position counted in batches), do not depend
    on the number of processes: a run can resume on a different number of hosts.
    `random_crop=(scale, ratio)`: each image is an Inception-style random resized crop of the
    original, made while decoding; None: the eval geometry (resize, centre crop). Crops are
    drawn from grain's per-element generator (seed, position in the endless stream): the same
    for any number of workers or threads, new every epoch, and restored with the iterator state.
    With `class_balanced`, every class is drawn equally often (examples with replacement).
    A `tf_input.TfdsSplit` source goes through tf.data instead (`config.input.backend="tf"`);
    an in-memory `ArraySource` without a host crop is gathered whole batches at a time
    (`ArrayBatches`).
    """
    if isinstance(source, sources.ArraySource) and random_crop is None and not class_balanced:
        return ArrayBatches(source, local_batch, seed)
    return grain_train_iterator(source, local_batch, seed, num_workers, num_threads,
                                random_crop, class_balanced)


def grain_train_iterator(source, local_batch: int, seed: int, num_workers: int = 0,
                         num_threads: int = 4, random_crop: images.RandomCrop | None = None,
                         class_balanced: bool = False) -> grain.DatasetIterator:
    """`train_iterator` through grain, element by element, for any random-access source."""
    if isinstance(source, tf_input.TfdsSplit):
        if class_balanced:
            raise ValueError("config.class_balanced_sampler needs config.input.backend='grain'")
        return tf_input.train_iterator(source, local_batch, seed, num_threads, random_crop)
    ds = grain.MapDataset.source(source if random_crop is None else _Records(source))
    if class_balanced:
        labels = getattr(source, "labels", None)
        if labels is None or np.ndim(labels) != 1:
            raise ValueError("config.class_balanced_sampler needs int class labels listed up "
                             f"front, which {type(source).__name__} does not have")
        ds = _ClassBalanced(ds, np.asarray(labels), (seed,))
    else:
        ds = ds.seed(seed).shuffle().repeat(None)  # shuffle-then-repeat: a new order per epoch
    if random_crop is not None:
        ds = ds.random_map(functools.partial(_decode_cropped, size=source.size,
                                             random_crop=random_crop), seed=seed)
    ds = ds.batch(local_batch, drop_remainder=True)[jax.process_index()::jax.process_count()]
    it = ds.to_iter_dataset(_read_options(num_threads))
    if num_workers > 0:
        if not flags.FLAGS.is_parsed():  # grain reads its absl flags; a notebook never parsed them
            flags.FLAGS.mark_as_parsed()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return iter(it)


class _Padded:
    """`source` at `indices`, where index -1 is a zero example with mask 0 (eval padding)."""

    def __init__(self, source, indices: np.ndarray):
        self.source, self.indices = source, indices
        self.blank = source[0] if len(source) else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        if j < 0:
            ex = dict(self.blank)
            ex["image"] = np.zeros_like(ex["image"])
            ex["bad"], ex["pad"] = np.bool_(False), np.bool_(True)  # padding, not a bad file
            return ex
        return {**self.source[j], "pad": np.bool_(False)}


def eval_batches(source, global_batch: int, num_threads: int = 4):
    """Each example of `source` exactly once, in fixed-size batches; padding has `pad=True`.

    Every process gets the same number of batches (ceil(N / global_batch)), so collective eval
    steps line up across hosts; the tail is padded, never dropped.
    """
    if isinstance(source, tf_input.TfdsSplit):
        return tf_input.eval_batches(source, global_batch, num_threads)
    p, n_proc = jax.process_index(), jax.process_count()
    local_batch = global_batch // n_proc
    num_batches = -(-len(source) // global_batch)
    mine = np.arange(p, len(source), n_proc)
    indices = np.full(num_batches * local_batch, -1, np.int64)
    indices[: len(mine)] = mine
    ds = grain.MapDataset.source(_Padded(source, indices)).batch(local_batch)
    return iter(ds.to_iter_dataset(_read_options(num_threads)))


def to_global(batch: dict, sharding: jax.sharding.NamedSharding) -> dict:
    """Process-local numpy batch -> global jax arrays sharded on the batch axis.

    Examples that must not count (unreadable files, eval padding) get mask 0.
    """
    mask = ~batch["bad"]
    if "pad" in batch:
        mask &= ~batch["pad"]
    local = {"image": batch["image"], "label": batch["label"], "mask": mask.astype(np.float32)}
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
