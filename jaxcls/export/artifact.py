"""Reading an exported run (DIR/model.jax + DIR/metadata.json) with jax and numpy only.

A consumer without jaxcls needs just these lines (jax, numpy; flatbuffers for deserialising):

    exported = jax.export.deserialize(open("DIR/model.jax", "rb").read())
    probs = exported.call(images)  # uint8 [batch, S, S, 3] RGB -> float32 [batch, C]

with S and the resize recipe from metadata.json ("preprocessing"). `Artifact` adds the
interface jaxcls.predict and jaxcls.serve use (class names, preprocessing, padded batches).
"""

import json
import os

import jax
import numpy as np

MODEL_FILE = "model.jax"
METADATA_FILE = "metadata.json"


def read_metadata(directory: str) -> dict:
    """DIR/metadata.json, with an error naming the directory when it is not an export."""
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {directory!r} a directory written "
                                "by python -m jaxcls.export?")
    with open(path) as f:
        return json.load(f)


def deserialize(directory: str) -> jax.export.Exported:
    """The jax.export.Exported in DIR/model.jax."""
    with open(os.path.join(directory, MODEL_FILE), "rb") as f:
        return jax.export.deserialize(bytearray(f.read()))


class Artifact:
    """An exported run: calibrated probabilities for uint8 images at the run's size, padded to
    a fixed batch so one compilation serves every call (the same interface as
    jaxcls.predict.Predictor)."""

    def __init__(self, directory: str):
        self.metadata = read_metadata(directory)
        if self.metadata.get("format") != "jax.export":
            raise ValueError(f"{directory} holds a {self.metadata.get('format')!r} export: "
                             "jaxcls.predict and jaxcls.serve run --format=jax exports")
        self.exported = deserialize(directory)
        self.class_names = list(self.metadata["class_names"])
        self.image_size = int(self.metadata["image_size"])
        self.crop_frac = float(self.metadata["preprocessing"]["crop_frac"])
        self.batch_size = int(self.metadata["batch_size"])
        self.fn = jax.jit(self.exported.call)

    def preprocessings(self) -> set[tuple[int, float]]:
        """The one (image_size, crop_frac) the exported function reads images at."""
        return {(self.image_size, self.crop_frac)}

    def probs(self, decoded: dict[tuple[int, float], np.ndarray]) -> np.ndarray:
        """[N, C] from {(size, crop_frac): uint8 [N, size, size, 3]}, N <= batch_size."""
        x = decoded[(self.image_size, self.crop_frac)]
        n = len(x)
        padded = np.concatenate([x, np.zeros((self.batch_size - n, *x.shape[1:]), x.dtype)])
        return np.asarray(self.fn(padded))[:n]
