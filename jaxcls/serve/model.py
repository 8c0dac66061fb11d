"""The function a server runs: from a run directory (built as jaxcls.export builds it, without
writing it) or from an exported directory. Either way a jitted uint8 -> probabilities function
whose compilations can be counted."""

import dataclasses

import jax
import numpy as np
from absl import logging

from jaxcls.export import artifact


@dataclasses.dataclass
class Served:
    fn: object  # jitted uint8 [B, S, S, 3] -> float32 probabilities [B, C]
    class_names: list[str]
    image_size: int
    crop_frac: float
    metadata: dict

    def compilations(self) -> int:
        """How many input shapes `fn` has compiled for so far."""
        return self.fn._cache_size()

    def warm_up(self, batch_sizes: list[int]) -> None:
        """Compiles every batch size up front, so no request waits for a compilation."""
        for b in batch_sizes:
            shape = (b, self.image_size, self.image_size, 3)
            jax.block_until_ready(self.fn(np.zeros(shape, np.uint8)))


def from_workdir(workdir: str, which: str = "best", ema: bool = False,
                 tta_spec: str = "") -> Served:
    """The run's calibrated predict function (as jaxcls.export would write it)."""
    from jaxcls import calibration, evaluate
    from jaxcls.export import build

    run = evaluate.load_run(workdir, which, ema)
    temperature = calibration.temperature(run.step_dir, evaluate.calibration_key(tta_spec,
                                                                                ema=ema))
    if temperature is None:
        logging.warning("%s has no temperature for TTA %r: probabilities are uncalibrated",
                        run.step_dir, tta_spec)
    fn = build.serving_function(run, tta_spec, temperature or 1.0)
    meta = build.metadata(run, tta_spec, temperature, ema, evaluate.global_batch_size(run.config))
    return Served(fn, list(run.class_names), run.config.image_size, run.config.crop_frac, meta)


def from_exported(directory: str) -> Served:
    """A jaxcls.export directory's function."""
    a = artifact.Artifact(directory)
    return Served(a.fn, a.class_names, a.image_size, a.crop_frac, a.metadata)
