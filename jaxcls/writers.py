"""Where metrics go: WORKDIR/metrics.jsonl, TensorBoard event files, and a stdout progress line.

Only process 0 writes. TensorBoard files come from tensorboardX, which needs no TensorFlow.
"""

import json
import logging
import os

import jax
from absl import logging as absl_logging


class MetricWriter:
    def __init__(self, workdir: str, resume_step: int = 0):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        self.path = os.path.join(workdir, "metrics.jsonl")
        if resume_step >= 0 and os.path.exists(self.path):
            _truncate_after(self.path, resume_step)
        self.jsonl = open(self.path, "a")
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=resume_step + 1)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.active:
            return
        self.jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        self.jsonl.flush()
        for k, v in values.items():
            self.tb.add_scalar(f"{split}/{k}", v, int(step))
        self.tb.flush()

    def close(self) -> None:
        if self.active:
            self.jsonl.close()
            self.tb.close()


def _truncate_after(path: str, step: int) -> None:
    """Drops lines logged after `step`: a resumed run redoes those steps and logs them again."""
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= step]
    if len(kept) != len(lines):
        with open(path, "w") as f:
            f.writelines(kept)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def progress_line(step: int, total: int, epoch: float, values: dict[str, float], lr: float,
                  img_per_s: float, eta_s: float) -> str:
    return (f"step {step}/{total} epoch {epoch:.2f} loss {values['loss']:.4f} "
            f"acc {values['accuracy']:.4f} lr {lr:.3g} {img_per_s:.0f} img/s "
            f"ETA {format_duration(eta_s)}")


class _QuietLibraries(logging.Filter):
    """Drops INFO chatter of orbax and grain (dozens of lines per checkpoint); keeps warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        noisy = any(f"/{lib}/" in record.pathname for lib in ("orbax", "grain"))
        return record.levelno >= logging.WARNING or not noisy


def quiet_libraries() -> None:
    """Installs the filter above on absl's log handler (the command-line entry points call it)."""
    absl_logging.get_absl_handler().addFilter(_QuietLibraries())


def quiet_other_processes() -> None:
    """In a multi-process run, only process 0 logs INFO lines; the others log warnings and
    errors (called once at start, after jax.distributed is initialised)."""
    if jax.process_count() > 1 and jax.process_index() != 0:
        absl_logging.set_verbosity(absl_logging.WARNING)
