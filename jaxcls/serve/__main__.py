"""python -m jaxcls.serve: see jaxcls/serve/__init__.py."""

import dataclasses

from absl import app, flags, logging

from jaxcls import cli, evaluate, writers
from jaxcls.serve import model
from jaxcls.serve.app import Settings, create_app


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if bool(f.workdir) == bool(f.exported):
        raise app.UsageError("give --workdir=W or --exported=DIR (one of them)")
    writers.quiet_libraries()
    import uvicorn

    served = (model.from_exported(f.exported) if f.exported
              else model.from_workdir(f.workdir, f.checkpoint, f.ema, f.tta))
    settings = Settings(**{k.name: getattr(f, k.name) for k in dataclasses.fields(Settings)})
    application = create_app(served, settings)
    logging.info("serving %s on http://%s:%d", f.exported or f.workdir, f.host, f.port)
    uvicorn.run(application, host=f.host, port=f.port, log_level=f.log_level)


if __name__ == "__main__":
    evaluate.define_run_flags(ensemble=False, required=False)
    flags.DEFINE_string("exported", None, "a directory written by jaxcls.export, instead of "
                        "--workdir")
    flags.DEFINE_string("host", "127.0.0.1", "address to listen on")
    flags.DEFINE_integer("port", 8000, "port to listen on")
    flags.DEFINE_string("log_level", "warning", "uvicorn's log level")
    defaults = Settings()
    flags.DEFINE_integer("max_batch", defaults.max_batch, "images per compiled call (buckets: "
                         "powers of two up to it)")
    flags.DEFINE_float("max_wait_ms", defaults.max_wait_ms, "how long a batch waits to fill")
    flags.DEFINE_integer("max_request_bytes", defaults.max_request_bytes, "body size limit")
    flags.DEFINE_integer("max_pixels", defaults.max_pixels, "pixel limit per image (header)")
    flags.DEFINE_integer("max_images", defaults.max_images, "images per request limit")
    flags.DEFINE_float("timeout_s", defaults.timeout_s, "per-request time limit")
    flags.DEFINE_bool("warm_up", defaults.warm_up, "compile every bucket before serving")
    cli.run(main)
