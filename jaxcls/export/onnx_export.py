"""An ONNX file of the exported function, through jax2onnx (the `onnx` extra), validated with
onnx.checker and run by onnxruntime for the self-check of jaxcls.export.

jax2onnx 0.17.1 requires orbax-checkpoint<0.11.37 (jaxcls otherwise runs with 0.12.x): install
the extra in its own environment. Checked there with jax 0.10.2, orbax-checkpoint 0.11.36,
onnx 1.23.2 and onnxruntime 1.32.0 (2026-12-03); checkpoints written with orbax 0.12.8 load.
"""

import os

import jax
import numpy as np

ONNX_FILE = "model.onnx"


def write_onnx(fn, image_size: int, directory: str):
    """DIR/model.onnx (input uint8 [batch, S, S, 3], batch symbolic) and an onnxruntime
    callable (uint8 numpy -> numpy)."""
    try:
        import onnx
        import onnxruntime
        from jax2onnx import to_onnx
    except ImportError as e:
        raise ImportError("--format=onnx needs jax2onnx and onnxruntime: pip install -e "
                          "'.[onnx]' (in its own environment: it pins orbax-checkpoint<0.11.37)"
                          ) from e
    model = to_onnx(fn, [jax.ShapeDtypeStruct(("batch", image_size, image_size, 3), np.uint8)])
    onnx.checker.check_model(model)
    path = os.path.join(directory, ONNX_FILE)
    onnx.save(model, path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.asarray(x, np.uint8)})[0]
