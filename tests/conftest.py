"""Shared test helpers: a tiny config and running jaxcls in a fresh process."""

import os
import subprocess
import sys

import pytest

from jaxcls import defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    """Digits at 8x8 through an 8-channel two-stage ResNet: compiles and steps in seconds."""
    c = defaults.get_config()
    c.dataset = "digits"
    c.image_size = 8
    c.crop_padding = 1
    c.flip = False
    c.mean, c.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    c.model = "resnet18"
    c.model_kwargs.width = 8
    c.model_kwargs.stage_sizes = (1, 1)
    c.model_kwargs.stem = "cifar"
    c.batch_size = 32
    c.num_steps = 10
    c.optimizer = "adamw"
    c.learning_rate = 1e-2
    c.weight_decay = 0.01
    c.log_every_steps = 1
    c.num_threads = 1
    for k, v in overrides.items():
        c[k] = v
    return c


def run_python(code: str, devices: int = 1, timeout: int = 600, **popen) -> subprocess.Popen:
    """Starts `python -c code` with `devices` simulated CPU devices (XLA_FLAGS must be set
    before jax is imported, hence a subprocess)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


@pytest.fixture
def workdir(tmp_path):
    return str(tmp_path / "run")
