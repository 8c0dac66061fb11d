"""Command line: python -m jaxcls.main --config=configs/X.py --workdir=DIR [--config.key=value]."""

from absl import app, flags
from ml_collections import config_flags

from jaxcls import cli, distributed, train, writers

config_flags.DEFINE_config_file("config", None, "A config file from configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard; an "
                    "existing one is resumed.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs: under SLURM, Open MPI or on TPU VMs these are detected; give them for
# other launchers (launch/local.sh, launch/k8s_jobset.yaml). Every process runs the same command.
flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator "
                    "(default: $JAX_COORDINATOR_ADDRESS).")
flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1 "
                     "(default: $JOB_COMPLETION_INDEX).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    writers.quiet_other_processes()
    train.run(f.config, f.workdir)


if __name__ == "__main__":
    cli.run(main)
