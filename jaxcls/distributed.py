"""Joining a multi-process run: whether to call `jax.distributed.initialize`, and with what.

Every process (one per host, or one per GPU) runs the same command; process 0 hosts the
coordinator. JAX's own cluster detection finds the coordinator address, process count and
process id under SLURM, Open MPI and on Cloud TPU VMs (GCE and GKE). This module decides
whether a process runs under such a launcher at all (so a laptop run never waits for a
coordinator), fixes the GPUs a SLURM task sees, and passes explicit command-line values through
(`launch/local.sh`, Kubernetes JobSet).
"""

import glob
import importlib.util
import os
from collections.abc import Mapping

import jax
from absl import logging


def _on_tpu_vm() -> bool:
    """libtpu (the `jax[tpu]` install) and TPU chips: /dev/accel* (v4) or /dev/vfio/N (v5+)."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


def detect_cluster(environ: Mapping[str, str] = os.environ) -> str | None:
    """The launcher that started this process as one of several, or None (a single process).

    A SLURM job counts only inside an `srun` step with more than one task; a TPU VM counts
    always (a single-host slice initialises as one process, which costs nothing).
    """
    if int(environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_NODELIST" in environ:
        return "slurm"
    # mpirun of Open MPI 4 (JAX finds the coordinator through the ORTE URI; Open MPI 5 has none).
    if int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1 and "OMPI_MCA_orte_hnp_uri" in environ:
        return "ompi"
    if environ.get("TPU_WORKER_HOSTNAMES") or environ.get("TPU_PROCESS_ADDRESSES"):
        return "gketpu"
    if _on_tpu_vm():
        return "gcetpu"
    return None


def slurm_local_device_ids(environ: Mapping[str, str] = os.environ) -> list[int] | None:
    """GPUs (CUDA ordinals) this SLURM task drives; None: JAX's default, GPU number SLURM_LOCALID.

    JAX's default fits one task per GPU with every GPU visible to every task. With one task per
    node the task drives all its node's GPUs, and where SLURM gives each task its own GPU
    (`--gpus-per-task=1`) that GPU is ordinal 0.
    """
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if not visible:
        return None
    if len(visible) == 1:
        return [0]
    if environ.get("SLURM_NTASKS") == environ.get("SLURM_STEP_NUM_NODES"):
        return list(range(len(visible)))
    return None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               environ: Mapping[str, str] = os.environ) -> str | None:
    """Joins the multi-process run this process belongs to; call before any other JAX call.

    Explicit values (any of the three) win; `coordinator_address` may come from
    JAX_COORDINATOR_ADDRESS and `process_id` from JOB_COMPLETION_INDEX (Kubernetes indexed
    jobs). Otherwise a detected launcher (`detect_cluster`) lets JAX fill in all three.
    Returns how the run was found ("flags", "slurm", ...), or None for a single process.
    """
    kwargs = {}
    if (coordinator_address, num_processes, process_id) != (None, None, None):
        how = "flags"
        coordinator_address = coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS")
        if process_id is None and "JOB_COMPLETION_INDEX" in environ:
            process_id = int(environ["JOB_COMPLETION_INDEX"])
        given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
                 "process_id": process_id}
        missing = [f"--{k}" for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"a multi-process run needs --coordinator_address, "
                             f"--num_processes and --process_id; missing {missing}")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                             f"{num_processes})")
        kwargs = given
    else:
        how = detect_cluster(environ)
        if how is None:
            return None
        if how == "slurm":
            kwargs["local_device_ids"] = slurm_local_device_ids(environ)
    # Real CPU collectives between processes (the default on current JAX; set, not assumed).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # jaxcls's own SIGTERM handling (preemption.StopRequest) agrees on the stopping step and
    # bounds a stuck stop; the service's C++ handler would take SIGTERM from it.
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(**kwargs)
    logging.info("process %d of %d (%s): %d local of %d devices", jax.process_index(),
                 jax.process_count(), how, jax.local_device_count(), jax.device_count())
    return how
