"""Shared test helpers: a tiny config and running jaxcls in a fresh process."""

import importlib.util
import os
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    """configs/default.py shrunk: digits at 8x8 through an 8-channel two-stage ResNet, short
    fixed-length runs with every step logged; compiles and steps in seconds."""
    spec = importlib.util.spec_from_file_location("default", os.path.join(ROOT, "configs",
                                                                           "default.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config()
    c.image_size = 8
    c.augment = "crop(1)"
    c.model_kwargs.width = 8
    c.model_kwargs.stage_sizes = (1, 1)
    c.batch_size = 32
    c.num_epochs, c.num_steps = None, 10
    c.warmup_epochs = None
    c.eval_every_epochs = None
    c.learning_rate = 1e-2
    c.weight_decay = 0.01
    c.label_smoothing = 0.0
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


# The registry's torchvision 0.28.0 is built against CUDA torch: beside the CPU torch its C ops
# cannot register, but the model code is pure Python, so its op registrations are skipped
# (../shared/DESIGN.md, "Findings"). Done when the suite loads, because transformers imports
# torchvision whenever it is installed, and a failed import there hides every transformers model.
sys.modules.setdefault("torchvision._meta_registrations",
                       types.ModuleType("torchvision._meta_registrations"))


def torch_references():
    """(torch, torchvision, timm) for parity tests, importable beside the CPU torch."""
    import timm
    import torch
    import torchvision

    return torch, torchvision, timm


@pytest.fixture(scope="session")
def exported_run(tmp_path_factory):
    """(workdir, export dir, metadata): a 10-step tiny digits run given a stored temperature
    of 2.5 (as jaxcls.evaluate stores one), exported with jaxcls.export; shared by
    tests/test_export.py and tests/test_serve.py."""
    from jaxcls import calibration, evaluate, train
    from jaxcls.export import build

    root = tmp_path_factory.mktemp("deploy")
    workdir, out = str(root / "run"), str(root / "export")
    train.run(tiny_config(num_steps=10), workdir)
    calibration.save(evaluate.resolve_checkpoint(workdir, "last"), "", {"temperature": 2.5})
    meta = build.export_run(workdir, out, "last", verify_examples=96)
    return workdir, out, meta
