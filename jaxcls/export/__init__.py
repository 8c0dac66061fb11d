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

Other formats (checked 2026-12-03 with jax 0.10.2, each in its own throwaway virtualenv;
tests/test_export.py runs them where the packages are installed and skips them otherwise):
- --format=savedmodel (tf_export.py; the `tf` extra): jax2tf with native serialisation (the
  StableHLO inside an XlaCallModule op, batch polymorphic) -> DIR/savedmodel, then TFLite
  -> DIR/model.tflite; both reloaded and checked. Works with TensorFlow 2.21.
- --format=onnx (onnx_export.py; the `onnx` extra): jax2onnx 0.17.1 -> DIR/model.onnx with a
  uint8 input and a symbolic batch, validated by onnx.checker and checked through onnxruntime
  1.32. jax2onnx requires orbax-checkpoint<0.11.37 while jaxcls's environment runs 0.12.8, so
  the extra is not part of `test` (CI does not run it) and belongs in its own environment
  (there, orbax-checkpoint 0.11.36 reads jaxcls checkpoints written by 0.12.8).
jaxcls.predict and jaxcls.serve read --format=jax exports only.
"""
