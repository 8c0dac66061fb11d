"""The benchmark command prints one JSON line with the figures BENCHMARKS.md quotes."""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_benchmark_json_line(tmp_path):
    # The tests' two-stage ResNet (the default config's four stages take a minute to compile).
    config = tmp_path / "tiny.py"
    config.write_text("from tests.conftest import tiny_config\n"
                      "def get_config():\n    return tiny_config()\n")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "jaxcls.benchmark", f"--config={config}",
         "--config.ema_decay=0.9",  # recipes with an EMA (ViT, ConvNeXt) benchmark too
         "--steps=3", "--warmup=1", "--loop_steps=4", "--log_every=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["device_kind"] == "cpu" and result["device_count"] == 1
    assert result["global_batch"] == 32 and result["dataset"] == "digits"
    assert result["compile_s"] > 0 and result["step_ms"] > 0 and result["loop_step_ms"] > 0
    assert result["flops_per_step"] > 1e6
    # The times are real: compile plus 4 timed steps plus the 4 loop steps fit in the
    # command's own wall time (a unit slip, s for ms, would not).
    wall = time.perf_counter() - start
    assert result["compile_s"] + (4 * result["step_ms"] + 4 * result["loop_step_ms"]) / 1e3 < wall
    assert result["img_per_s"] == round(32e3 / result["step_ms"], 1)
    assert result["loop_over_step"] == round(result["loop_step_ms"] / result["step_ms"], 3)
    assert result["mfu"] is None  # no known peak for a CPU


def test_peak_table_knows_accelerators():
    from jaxcls import benchmark

    assert benchmark.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert benchmark.peak_flops("TPU v5 lite") == 197e12
    assert benchmark.peak_flops("cpu") is None


def test_input_benchmark_writes_its_jpegs_to_a_cache_folder(monkeypatch, tmp_path):
    from jaxcls.data import input_benchmark

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert input_benchmark.default_big_dir() == str(tmp_path / "jaxcls" / "big_jpegs")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert input_benchmark.default_big_dir() == str(tmp_path / "home" / ".cache" / "jaxcls" /
                                                    "big_jpegs")


def test_augment_cost_times_the_step_with_and_without_the_augmentation(monkeypatch):
    # The bare step must be the same run without augmentation or mixup, both on synthetic
    # data; the augmentation alone is timed for real on the recipe's own batch.
    from jaxcls import benchmark
    from tests.conftest import tiny_config

    timed = []

    def fake_step(config, num_steps, warmup):
        timed.append(config)
        return {"step_ms": 10.0 if config.augment else 4.0, "compile_s": 1.0}

    monkeypatch.setattr(benchmark, "time_compiled_step", fake_step)
    config = tiny_config(augment="flip|randaugment(2,9)")
    config.mixup.mixup_alpha = 0.2
    result = benchmark.augment_cost(config, num_steps=2, warmup=1)
    augmented, bare = timed
    assert augmented.augment == config.augment and augmented.mixup.mixup_alpha == 0.2
    assert bare.augment == "" and bare.mixup.mixup_alpha == 0.0 == bare.mixup.cutmix_alpha
    assert augmented.dataset == bare.dataset == "synthetic" and config.dataset == "digits"
    assert result["augment_ms"] == 6.0 and result["augment_fraction"] == 0.6
    assert result["augment_alone_ms"] > 0
