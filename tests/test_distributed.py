"""Runs in fresh processes: 8 simulated devices == 1 device; SIGTERM / SIGKILL + resume ==
uninterrupted."""

import json
import os
import signal
import time

import jax
import numpy as np
import pytest

from jaxcls import checkpoint
from tests.conftest import run_python

RUN = """
import sys
class NoTorch:  # as if PyTorch were not installed: the core must not need it
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoTorch())
import json
from tests.conftest import tiny_config
from absl import logging
from jaxcls import train, writers
logging.set_verbosity(logging.INFO)
writers.quiet_libraries()
train.run(tiny_config(**json.loads(OVERRIDES)), WORKDIR)
assert "tensorflow" not in sys.modules, "the core must run without TensorFlow"
"""


def _start(workdir: str, devices: int = 1, **overrides):
    code = RUN.replace("OVERRIDES", repr(json.dumps(overrides))).replace("WORKDIR", repr(workdir))
    return run_python(code, devices=devices)


def _finish(proc, timeout=600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _rows(workdir, split="train"):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def _final_params(workdir, step):
    return checkpoint.load_state(os.path.join(workdir, "checkpoints", str(step)))


@pytest.mark.slow
def test_eight_devices_match_one_device(tmp_path):
    # BatchNorm statistics are over the global batch in both, so the maths is the same.
    overrides = dict(num_steps=6, batch_size=16, final_eval=False)
    one = _start(str(tmp_path / "one"), devices=1, **overrides)
    out8 = _finish(_start(str(tmp_path / "eight"), devices=8, **overrides))
    _finish(one)
    assert "on 8 device(s)" in out8
    l1 = [r["loss"] for r in _rows(str(tmp_path / "one"))]
    l8 = [r["loss"] for r in _rows(str(tmp_path / "eight"))]
    assert len(l1) == 6
    np.testing.assert_allclose(l8, l1, rtol=1e-4)
    a, b = _final_params(str(tmp_path / "one"), 6), _final_params(str(tmp_path / "eight"), 6)
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)


def _wait_for_step(workdir, step, proc, timeout=300):
    t = time.time()
    while time.time() - t < timeout:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(path) and any(r["step"] >= step for r in _rows(workdir)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


def _wait_for_checkpoint(workdir, step, proc, timeout=300):
    t = time.time()
    while time.time() - t < timeout:
        assert proc.poll() is None, "the run ended before it could be killed"
        if os.path.isdir(os.path.join(workdir, "checkpoints", str(step), "state")):
            return
        time.sleep(0.05)
    raise TimeoutError(f"checkpoint {step} not written")


@pytest.mark.slow
def test_interrupted_runs_resume_exactly(tmp_path):
    # Slow enough steps (16x16, batch 64) that the signals land mid-run.
    overrides = dict(num_steps=50, image_size=16, batch_size=64, checkpoint_every_steps=20,
                     final_eval=False)
    full, term, kill = (str(tmp_path / n) for n in ("full", "term", "kill"))
    reference = _start(full, **overrides)

    proc = _start(term, **overrides)
    _wait_for_step(term, 10, proc)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc)  # SIGTERM: save at the step boundary, exit 0
    assert "SIGTERM received" in out
    stopped = json.load(open(os.path.join(term, "summary.json")))
    assert stopped["stopped_by"] == "SIGTERM" and 10 <= stopped["steps"] < 50
    _finish(_start(term, **overrides))

    proc = _start(kill, **overrides)
    _wait_for_checkpoint(kill, 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    out = _finish(_start(kill, **overrides))
    assert "resumed from" in out

    _finish(reference)
    ref = _final_params(full, 50)
    for other in (term, kill):
        got = _final_params(other, 50)
        for x, y in zip(jax.tree.leaves(ref), jax.tree.leaves(got), strict=True):
            np.testing.assert_array_equal(x, y)
        # The resumed log holds each step once, with the uninterrupted run's losses.
        assert [r["step"] for r in _rows(other)] == list(range(1, 51))
        np.testing.assert_allclose([r["loss"] for r in _rows(other)],
                                   [r["loss"] for r in _rows(full)], rtol=1e-6)
