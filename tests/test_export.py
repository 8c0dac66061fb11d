"""jaxcls.export: the artifact reloads in a process without jaxcls and gives the run's
calibrated probabilities; the self-check refuses to write a mismatching export; predict
--exported runs from it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny_config
from PIL import Image

import jaxcls
from jaxcls import predict
from jaxcls.data import sources
from jaxcls.export import artifact, build

# A consumer with jax and numpy only: importing jaxcls would raise.
CONSUMER = r"""
import sys
sys.modules["jaxcls"] = None
import jax, numpy as np
directory, images, out = sys.argv[1:4]
with open(directory + "/model.jax", "rb") as f:
    exported = jax.export.deserialize(bytearray(f.read()))
x = np.load(images)
np.save(out, np.concatenate([np.asarray(exported.call(x[:3])), np.asarray(exported.call(x[3:]))]))
print(sorted(m for m, v in sys.modules.items() if v is not None
            and m.split(".")[0] in ("jaxcls", "flax", "optax", "orbax")))
"""


def _images(n=7):
    return sources.create(tiny_config()).eval.images[:n]


def _reference(workdir, x):
    return predict.Predictor([workdir], "last").probs({(8, 1.0): x})


def test_artifact_reloads_without_jaxcls_with_the_runs_calibrated_probabilities(exported_run,
                                                                                 tmp_path):
    workdir, out, meta = exported_run
    x = _images()
    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run([sys.executable, "-c", CONSUMER, out, str(tmp_path / "x.npy"),
                           str(tmp_path / "p.npy")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"  # no model code was imported
    probs = np.load(tmp_path / "p.npy")
    reference = _reference(workdir, x)  # jaxcls.predict: the model, then T = 2.5
    assert probs.shape == (7, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, reference, atol=1e-6)
    uncalibrated = reference ** 2.5 / (reference ** 2.5).sum(-1, keepdims=True)
    assert np.abs(probs - uncalibrated).max() > 1e-3  # the temperature is inside


def test_metadata_describes_the_function_and_its_source(exported_run):
    workdir, out, meta = exported_run
    with open(os.path.join(out, artifact.METADATA_FILE)) as f:
        assert json.load(f) == meta
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["input"] == {"dtype": "uint8", "shape": ["batch", 8, 8, 3],
                             "layout": "NHWC, RGB"}
    assert meta["image_size"] == 8 and meta["preprocessing"]["crop_frac"] == 1.0
    assert meta["preprocessing"]["mean"] == list(tiny_config().mean)
    assert meta["temperature"] == 2.5 and meta["calibrated"] is True
    assert meta["format"] == "jax.export" and meta["file"] == "model.jax"
    assert meta["platforms"] == ["cpu", "cuda", "tpu"]
    assert meta["source"]["checkpoint"] == os.path.join(workdir, "checkpoints", "10")
    assert meta["source"]["step"] == 10 and meta["source"]["workdir"] == workdir
    assert meta["jaxcls_version"] == jaxcls.__version__
    check = meta["verification"]
    assert check["examples"] == 96 and check["split"] == "test"
    assert check["max_abs_diff"] <= 1e-4 and check["top1_agreement"] == 1.0


def test_a_mismatch_fails_the_export_and_writes_nothing(exported_run, tmp_path):
    workdir = exported_run[0]
    out = str(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"^export check failed for model\.jax on 32 eval "
                       r"examples of .*: max \|Δprob\| .* top-1 agreement 1\.0000 "
                       r"\(minimum 1\.5\); nothing written to .*bad$"):
        build.export_run(workdir, out, "last", verify_examples=32, min_top1_agreement=1.5)
    assert not os.path.exists(out)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".export-")]  # staging removed
    with pytest.raises(ValueError, match=r"--platforms: unknown \['gpu'\]"):
        build.export_run(workdir, out, "last", platforms=("cpu", "gpu"))


def test_predict_runs_from_the_export(exported_run, tmp_path):
    workdir, out, _ = exported_run
    x = _images(3)
    files = []
    for i, image in enumerate(x):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(files[-1])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    rows = list(predict.predict(None, [str(tmp_path)], top_k=3, exported=out, progress=False))
    assert [r["path"] for r in rows if "error" in r] == [str(tmp_path / "junk.png")]
    rows = [r for r in rows if "top_k" in r]
    reference = _reference(workdir, x)
    assert [r["path"] for r in rows] == files
    for r, p in zip(rows, reference, strict=True):
        top = np.argsort(-p, kind="stable")[:3]
        assert [label for label, _ in r["top_k"]] == [str(j) for j in top]
        np.testing.assert_allclose([q for _, q in r["top_k"]], p[top], atol=1e-6)


def test_savedmodel_and_tflite_round_trip_where_tensorflow_is_installed(exported_run, tmp_path):
    tf = pytest.importorskip("tensorflow", reason="--format=savedmodel needs the tf extra")
    workdir = exported_run[0]
    out = str(tmp_path / "tf")
    meta = build.export_run(workdir, out, "last", verify_examples=32, fmt="savedmodel")
    assert meta["format"] == "savedmodel" and meta["temperature"] == 2.5
    checks = meta["verification_by_file"]
    assert sorted(checks) == ["model.tflite", "savedmodel"]
    assert all(c["max_abs_diff"] <= 1e-4 and c["top1_agreement"] == 1.0 for c in checks.values())
    x = _images(5)
    reloaded = tf.saved_model.load(os.path.join(out, "savedmodel"))
    got = reloaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(next(iter(got.values())).numpy(), _reference(workdir, x),
                               atol=1e-5)
    with pytest.raises(ValueError, match="holds a 'savedmodel' export"):
        artifact.Artifact(out)


def test_onnx_round_trip_where_jax2onnx_is_installed(exported_run, tmp_path):
    pytest.importorskip("jax2onnx", reason="--format=onnx needs the onnx extra (its own "
                        "environment: jax2onnx pins orbax-checkpoint<0.11.37)")
    import onnx
    import onnxruntime

    workdir = exported_run[0]
    out = str(tmp_path / "onnx")
    meta = build.export_run(workdir, out, "last", verify_examples=32, fmt="onnx")
    assert meta["format"] == "onnx" and meta["file"] == "model.onnx"
    assert meta["verification"]["max_abs_diff"] <= 1e-4
    onnx.checker.check_model(onnx.load(os.path.join(out, "model.onnx")))
    session = onnxruntime.InferenceSession(os.path.join(out, "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    x = _images(5)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, _reference(workdir, x), atol=1e-5)
