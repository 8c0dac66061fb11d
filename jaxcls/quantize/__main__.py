"""python -m jaxcls.quantize --workdir=W --scheme=w8|w8a8|w8a8_static [--calibration=512]:
see jaxcls/quantize/__init__.py."""

from absl import app, flags

from jaxcls import cli, writers
from jaxcls.quantize import schemes, table


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    result = table.quantize_run(f.workdir, f.scheme, f.calibration, f.checkpoint,
                                f.eval_examples, f.repeats)
    print(table.markdown(result))
    print(f"wrote {schemes.directory(f.workdir, f.scheme)}; evaluate it with python -m "
          f"jaxcls.evaluate --workdir={f.workdir} --quantized={f.scheme}")


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "a jaxcls run directory", required=True)
    flags.DEFINE_string("checkpoint", "best", "best | last | a step number")
    flags.DEFINE_enum("scheme", "w8a8_static", list(schemes.SCHEMES), "the int8 scheme")
    flags.DEFINE_integer("calibration", 512, "w8a8_static: training images fixing the "
                         "activation ranges")
    flags.DEFINE_integer("eval_examples", 0, "eval examples of the top-1 column (0: all)")
    flags.DEFINE_integer("repeats", 10, "timed forward passes per latency figure")
    cli.run(main)
