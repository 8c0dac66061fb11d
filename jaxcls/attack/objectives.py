"""What the attacks maximise, per example (logits [B, C], labels [B] -> [B]): cross-entropy,
and Croce & Hein's (2020) difference of logits ratio (DLR), untargeted and targeted. DLR is
invariant to shifting and scaling the logits, so a model cannot hide behind saturated
softmax outputs."""

import jax
import jax.numpy as jnp

LOSSES = ("ce", "dlr")


def check_loss(loss: str, num_classes: int, targeted: bool = False) -> str:
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r}: use one of {LOSSES}")
    need = 4 if targeted else 3
    if loss == "dlr" and num_classes < need:
        raise ValueError(f"{'targeted ' if targeted else ''}DLR needs at least {need} classes "
                         f"(the model has {num_classes}); use loss 'ce'")
    return loss


def _at(logits: jax.Array, index: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logits, index[:, None], axis=1)[:, 0]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """-log softmax(logits)[label]."""
    return -_at(jax.nn.log_softmax(logits.astype(jnp.float32)), labels)


def dlr(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3), with z_pi1 >= z_pi2 >= ... the sorted
    logits."""
    z = logits.astype(jnp.float32)
    top = jnp.sort(z, axis=1)[:, ::-1]
    z_y = _at(z, labels)
    label_on_top = jnp.argmax(z, axis=1) == labels
    other = jnp.where(label_on_top, top[:, 1], top[:, 0])
    return -(z_y - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: jax.Array, labels: jax.Array, targets: jax.Array) -> jax.Array:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)."""
    z = logits.astype(jnp.float32)
    top = jnp.sort(z, axis=1)[:, ::-1]
    return -(_at(z, labels) - _at(z, targets)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3])
                                                  + 1e-12)


def cross_entropy_targeted(logits: jax.Array, labels: jax.Array, targets: jax.Array
                           ) -> jax.Array:
    """log softmax(logits)[target]: raising the target's probability."""
    del labels
    return -cross_entropy(logits, targets)


def get(loss: str, targeted: bool):
    """The per-example objective: (logits, labels) -> [B], or (logits, labels, targets) -> [B]."""
    if targeted:
        return {"ce": cross_entropy_targeted, "dlr": dlr_targeted}[loss]
    return {"ce": cross_entropy, "dlr": dlr}[loss]
