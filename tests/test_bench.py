"""The benchmark modes beyond one config: jaxcls beside timm (--vs_timm) and the accelerator
suite (--suite=gpu), with a tiny model so that the plumbing runs in seconds on a CPU."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_vs_timm_same_network_same_loss_and_ratio():
    from jaxcls.bench import vs_timm

    lines = []
    result = vs_timm.run(["tiny"], num_steps=2, warmup=1, echo=lines.append)
    (row,) = result["vs_timm"]
    assert row["jaxcls_ms"] > 0 and row["timm_ms"] > 0
    assert row["ratio"] == round(row["jaxcls_ms"] / row["timm_ms"], 3)
    # Both sides started from timm's weights, imported by jaxcls.weights: one network, so
    # the first step's loss (label-smoothed, BN-free ViT) agrees to float32 rounding.
    assert row["jaxcls_params"] == row["timm_params"] == 15_882
    assert row["jaxcls_loss"] == pytest.approx(row["timm_loss"], abs=1e-4)
    assert row["jaxcls_loss"] > 2.0  # ~ln(10) at init, not a zero from an empty batch
    assert len(lines) == 1 and f"{row['ratio']:.3f}" in lines[0]
    assert result["device_kind"] == "cpu" and result["torch_threads"] >= 1


def test_vs_timm_rejects_unknown_models():
    from jaxcls.bench import vs_timm

    with pytest.raises(ValueError, match="resnet50"):
        vs_timm.run(["resnet5O"], 1, 1)


def test_gpu_suite_rows_and_mfu(tmp_path):
    """The step section on the tiny suite with a made-up peak (so MFU is a number) and the
    config section skipping a config file that does not exist."""
    from jaxcls.bench import gpu_suite

    peak = 1e12
    result = gpu_suite.run(gpu_suite.tiny_suite(), str(tmp_path / "no_such_config.py"), "",
                           peak=peak, echo=lambda line: None, sections=("step", "config"))
    (row,) = result["step"]
    assert row["step_ms"] > 0 and row["timm_ms"] > 0 and row["flops_per_step"] > 1e6
    assert row["mfu"] == round(row["flops_per_step"] / (row["step_ms"] / 1e3) / peak, 4)
    assert row["img_per_s"] == round(row["batch"] * 1e3 / row["step_ms"], 1)
    assert row["ratio"] == round(row["step_ms"] / row["timm_ms"], 3)
    assert result["config"] == [{"config": str(tmp_path / "no_such_config.py"),
                                 "skipped": f"{tmp_path / 'no_such_config.py'} does not exist "
                                            "(yet)"}]
    md = result["markdown"].splitlines()
    step_table = md[md.index("compiled train step beside timm's:") + 2:]
    header, rule, first = step_table[:3]
    assert header.count("|") == rule.count("|") == first.count("|") == 11
    assert first.startswith("| vit_ti16 | float32 | 4 | ")
    assert "does not exist (yet)" in result["markdown"] and "loop" not in result["seconds"]


@pytest.mark.gpu_suite  # minutes here: run before a GPU session, outside CI's budget
def test_gpu_suite_command_tiny(tmp_path):
    """Every section of `--suite=gpu --tiny` through the command: a JPEG folder, a config."""
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    for split, n in (("train", 8), ("test", 4)):
        for c in "ab":
            os.makedirs(tmp_path / "jpegs" / split / c)
            for i in range(n):
                Image.fromarray(rng.randint(0, 256, (20, 20, 3), np.uint8)).save(
                    tmp_path / "jpegs" / split / c / f"{i}.jpg")
    config = tmp_path / "tiny.py"
    config.write_text("from tests.conftest import tiny_config\n"
                      "def get_config():\n    return tiny_config()\n")
    out = tmp_path / "rows.md"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxcls.benchmark", "--suite=gpu", "--tiny",
         f"--suite_config={config}", f"--suite_data={tmp_path / 'jpegs'}",
         f"--suite_out={out}", "--peak_tflops=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
        env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.read_text() == result["markdown"]
    assert [r["dataset"] for r in result["loop"]] == ["synthetic", f"folder:{tmp_path}/jpegs"]
    assert all(r["loop_over_step"] == round(r["loop_step_ms"] / r["step_ms"], 3)
               for r in result["loop"])
    (aug,) = result["augment"]
    assert aug["augment_fraction"] == round(1 - aug["step_ms_no_augment"] / aug["step_ms"], 4)
    (run,) = result["config"]
    assert run["steps"] == 2 and 0 <= run["accuracy"] <= 1 and run["wall_s"] > 0

