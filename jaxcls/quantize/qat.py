"""Quantization-aware training: the train loop's model computing through qwix's int8 fake
quantization (weights per channel and activations per example, absmax, with straight-through
gradients), so the weights learn to survive the rounding that `python -m jaxcls.quantize
--scheme=w8a8` applies afterwards.

    python -m jaxcls.main --config=... --config.quantization=w8a8
    python -m jaxcls.quantize --workdir=W --scheme=w8a8     # the int8 model, as after PTQ

The parameters keep the float model's structure, so checkpoints, `init_from` and every
command that reads a run work unchanged; the evaluations logged during training are those of
the fake-quantized model, `jaxcls.evaluate` without --quantized the float one.
"""

import flax.linen as nn

from jaxcls.quantize import schemes

SCHEMES = ("", "w8a8")


def check(scheme: str) -> None:
    """Raises ValueError naming config.quantization when `scheme` is not trainable."""
    if scheme not in SCHEMES:
        raise ValueError(f"config.quantization={scheme!r}: use '' (float training) or 'w8a8' "
                         f"(int8 weights and activations, dynamic range)")


def training_model(model: nn.Module, scheme: str) -> nn.Module:
    """`model` unchanged for '', else the same module computing through int8 fake
    quantization (qwix's QtProvider; a subclass with the same fields and parameters)."""
    check(scheme)
    if not scheme:
        return model
    import qwix

    return qwix.quantize_model(model, qwix.QtProvider([qwix.QtRule(
        **schemes.rule_kwargs(scheme))]))
