"""Command line: python -m jaxcls.main --config=configs/X.py --workdir=DIR [--config.key=value]."""

from absl import app, flags
from ml_collections import config_flags

from jaxcls import train, writers

config_flags.DEFINE_config_file("config", None, "A config file from configs/.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, TensorBoard; an "
                    "existing one is resumed.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    train.run(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)
