"""Post-training int8 quantization of a trained run, and its float-vs-int8 table.

    python -m jaxcls.quantize --workdir=W --scheme=w8a8_static [--calibration=512]

Schemes (`schemes.py`):
- `w8`: weight-only int8 storage. Every kernel is stored as int8 with a float32 scale per
  output channel (absmax) and widened back to float inside the jitted forward pass: a ~4x
  smaller checkpoint, float compute.
- `w8a8`: int8 weights and int8 activations with dynamic ranges (scales computed from each
  batch), through Google's `qwix` (its PTQ provider intercepts every convolution and matrix
  product: lax.conv_general_dilated, dot_general, einsum).
- `w8a8_static`: as w8a8, with activation ranges fixed by a calibration pass over
  --calibration training images (qwix's QT provider collects `quant_stats`).

The quantized variables go to WORKDIR/quantized/<scheme>/ with a meta.json; `jaxcls.evaluate`,
`predict`, `explain`, `robustness`, `serve` and `export` read them with --quantized=<scheme>.
The command also writes WORKDIR/quantized/<scheme>/table.json and prints the table: top-1 on
the eval split, model bytes, and CPU latency per image at batch 1 and 32, float beside int8.
"""
