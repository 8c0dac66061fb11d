"""SavedModel and TFLite files of the exported function, through jax2tf (the `tf` extra).

jax2tf embeds the function's StableHLO in the SavedModel (an XlaCallModule op, batch dimension
polymorphic); the TFLite file is converted from that SavedModel. Each gets a callable for the
self-check of jaxcls.export. Checked with TensorFlow 2.21 and jax 0.10.2 (2026-12-03).
"""

import os

import numpy as np

SAVEDMODEL_DIR = "savedmodel"
TFLITE_FILE = "model.tflite"


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("--format=savedmodel needs TensorFlow: pip install -e '.[tf]'") from e
    return tf


def write_savedmodel(fn, image_size: int, directory: str):
    """DIR/savedmodel with a `serve` signature (uint8 [None, S, S, 3] -> probabilities) and
    its reloaded callable (uint8 numpy -> numpy)."""
    tf = _tensorflow()
    from jax.experimental import jax2tf

    converted = jax2tf.convert(fn, polymorphic_shapes=[f"(b, {image_size}, {image_size}, 3)"],
                               with_gradient=False)
    module = tf.Module()
    module.serve = tf.function(converted, autograph=False, input_signature=[
        tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name="images")])
    path = os.path.join(directory, SAVEDMODEL_DIR)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    reloaded = tf.saved_model.load(path)
    return lambda x: reloaded.serve(tf.constant(x)).numpy()


def write_tflite(directory: str):
    """DIR/model.tflite converted from DIR/savedmodel, and its callable."""
    tf = _tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(os.path.join(directory, SAVEDMODEL_DIR))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    content = converter.convert()
    with open(os.path.join(directory, TFLITE_FILE), "wb") as f:
        f.write(content)
    interpreter = tf.lite.Interpreter(model_content=content)

    def call(x: np.ndarray) -> np.ndarray:
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return call
