"""Host input pipeline on grain: per-process shards of uint8 batches, and global device arrays."""

import grain
import jax
import numpy as np


def _read_options(num_threads: int) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(num_threads, 2))


def train_iterator(source, local_batch: int, seed: int, num_workers: int = 0,
                   num_threads: int = 4) -> grain.DatasetIterator:
    """Endless batches of this process's rows of each global batch, reshuffled every epoch.

    Process p of n gets rows [p * local_batch, (p + 1) * local_batch) of every global batch, so
    the global batches, and the iterator state (a position counted in batches), do not depend
    on the number of processes: a run can resume on a different number of hosts.
    """
    ds = grain.MapDataset.source(source)
    ds = ds.seed(seed).shuffle().repeat(None)  # shuffle-then-repeat draws a new order per epoch
    ds = ds.batch(local_batch, drop_remainder=True)[jax.process_index()::jax.process_count()]
    it = ds.to_iter_dataset(_read_options(num_threads))
    if num_workers > 0:
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
