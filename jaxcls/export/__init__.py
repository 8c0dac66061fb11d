"""Export a trained run as a self-contained function: uint8 images -> calibrated probabilities.

    python -m jaxcls.export --workdir=W --out=DIR [--checkpoint=best|last|STEP] [--ema]
        [--tta=flip] [--format=jax] [--platforms=cpu,cuda,tpu] [--verify_examples=1000]

writes DIR/model.jax (jax.export serialized StableHLO, lowered for every platform in
--platforms, batch dimension symbolic) and DIR/metadata.json (class names, input size,
preprocessing, temperature, source run and checkpoint, jaxcls and jax versions, and the
self-check below). The function holds the parameters, the normalisation and the temperature
that jaxcls.evaluate stored for the checkpoint; decoding and the eval resize/crop stay on the
host (jaxcls.data.images.decode; metadata.json spells the recipe out). Reloading needs jax and
numpy (and flatbuffers), not jaxcls: see jaxcls/export/artifact.py. Before anything is written
the deserialised artifact is compared with jaxcls.predict on the run's eval split (the first
--verify_examples): max |Δprob| and top-1 agreement go into metadata.json, and a mismatch beyond
--tolerance / --min_top1_agreement fails the command. `jaxcls.predict --exported=DIR` and
`jaxcls.serve --exported=DIR` run from the artifact.

Other formats (checked 2026-12-03 with jax 0.10.2, in throwaway virtualenvs):
- ONNX: jax2onnx 0.17.1 installs beside jax 0.10.2 and converted a Conv/BatchNorm/Dense Flax
  model with a uint8 input and symbolic batch (onnxruntime 1.32 matched JAX to 1.5e-8), but it
  requires orbax-checkpoint<0.11.37 while jaxcls runs with orbax-checkpoint 0.12.8: installing
  it would downgrade the core's checkpointing, so it is not an extra and --format=onnx is not
  implemented.
- SavedModel / TFLite (jax2tf): see the note on TensorFlow below.
"""
