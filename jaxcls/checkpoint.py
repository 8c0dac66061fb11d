"""Checkpoints: train state + data-iterator position under WORKDIR/checkpoints, via orbax.

All orbax calls live here (orbax's v1 API is expected to replace v0 at its 1.0).
Kept: the last `keep` checkpoints plus the best by the monitored eval metric (accuracy unless
early stopping watches another; the earliest of ties, as train.best_eval picks).
"""

import glob
import json
import logging
import math
import os

import grain
import jax
import orbax.checkpoint as ocp
from absl import flags
from orbax.checkpoint import checkpoint_managers as policies

# Orbax's default barrier between processes is a device collective (sync_global_devices). Run
# from the asynchronous save's thread, it can interleave with the train and eval steps'
# collectives in a different order on each process, and then both hang (seen with 2 processes
# on gloo). The distributed client's barrier uses no devices.
flags.FLAGS.set_default("experimental_orbax_use_distributed_barrier", True)


class Checkpointer:
    def __init__(self, workdir: str, keep: int, metric: str = "accuracy", higher: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        sign = 1.0 if higher else -1.0

        def rank(m: dict) -> tuple[float, int]:
            """BestN keeps the largest: the best value, then the earliest step (checkpoints
            saved before steps were recorded, or without the metric, rank lowest)."""
            value = m.get(metric)
            return (-math.inf if value is None else sign * value, -m.get("step", 0))

        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(keep),
            policies.BestN(get_metric_fn=rank, n=1, keep_checkpoints_without_metrics=False),
        ])
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(
                preservation_policy=preservation, enable_async_checkpointing=True, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter, eval_metrics: dict | None = None,
             target_iter=None) -> None:
        """Starts an asynchronous save (device->host copy happens before this returns);
        `target_iter`: a second data iterator (domain adaptation's target images)."""
        extra = ({} if target_iter is None
                 else {"target_iter": grain.checkpoint.CheckpointSave(target_iter)})
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data_iter=grain.checkpoint.CheckpointSave(data_iter), **extra),
            metrics=None if eval_metrics is None else {**eval_metrics, "step": step}, force=True)

    def restore(self, step: int, abstract_state, data_iter, target_iter=None):
        """State at `step` laid out as `abstract_state` (ShapeDtypeStructs with shardings, so
        any mesh: orbax reshards); `data_iter` is moved to where it was when that step was saved.

        A checkpoint written by a different number of processes restores too: the loader's
        iterator state is the same on every process (a position in global batches), so the
        saved one is set on this process's iterator.
        """
        iter_dir = os.path.join(self.path(step), "data_iter")
        own = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        iters = {"data_iter": data_iter}
        if target_iter is not None:
            iters["target_iter"] = target_iter
        if os.path.exists(os.path.join(iter_dir, own)):
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                **{k: grain.checkpoint.CheckpointRestore(it) for k, it in iters.items()}))
            return restored["state"]
        for name, it in iters.items():
            it.set_state(_shared_iterator_state(os.path.join(self.path(step), name)))
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"]

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _shared_iterator_state(iter_dir: str) -> dict:
    """The data-iterator state every process saved in `iter_dir` (they must agree)."""
    names = sorted(glob.glob(os.path.join(iter_dir, "process_*-of-*.json")))
    if not names:
        raise FileNotFoundError(f"no data-iterator state in {iter_dir}")
    states = {}
    for name in names:
        with open(name) as f:
            states[os.path.basename(name)] = json.load(f)
    if any(s != states[os.path.basename(names[0])] for s in states.values()):
        raise ValueError(f"the processes that wrote {iter_dir} were at different data positions "
                         f"({states}); resume it on the same number of processes")
    return states[os.path.basename(names[0])]


def abstract(tree, shardings):
    """ShapeDtypeStructs carrying the target shardings, for a restore onto the current mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def load_state(step_dir: str):
    """The train state saved in `step_dir` (WORKDIR/checkpoints/STEP) as a tree of arrays on
    this process's first device, whatever mesh saved it: for inspection and offline tools."""
    return _restore_local(os.path.join(os.path.abspath(step_dir), "state"))


class _NoMissingMetadataWarning(logging.Filter):
    """Drops orbax's "Metadata file does not exist" warning: reading the `state` item of a
    manager's step directory directly, orbax looks for the step's metadata file inside the
    item, where the manager never writes it; the item restores in full without it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


def _restore_local(path: str):
    quiet = _NoMissingMetadataWarning()
    logging.getLogger("absl").addFilter(quiet)  # absl's logger: orbax logs through it
    try:
        checkpointer = ocp.StandardCheckpointer()
        meta = checkpointer.metadata(path).item_metadata
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              meta)
        return checkpointer.restore(path, target)
    finally:
        logging.getLogger("absl").removeFilter(quiet)


def save_tree(path: str, tree) -> None:
    """Writes a tree of arrays (e.g. model variables) to `path`, synchronously."""
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.abspath(path), tree, force=True)


def load_tree(path: str):
    """A tree written by `save_tree`, on this process's first device."""
    return _restore_local(os.path.abspath(path))
