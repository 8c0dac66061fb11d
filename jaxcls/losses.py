"""Classification losses, per example (the caller masks and averages)."""

import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy of logits [N, C] against int labels [N] or soft targets [N, C] -> [N].

    Label smoothing mixes the targets with the uniform distribution: (1 - eps) * y + eps / C.
    """
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes) if labels.ndim == 1 else labels
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
