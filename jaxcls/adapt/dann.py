"""DANN's domain classifier and loss on the penultimate features (Ganin et al. 2016).

The features (the input of the model's `head`, as `jaxcls.probe.features` captures it) of a
source and a target batch pass the gradient reversal layer into a small MLP that tells the
domains apart; minimising its cross-entropy trains the classifier to separate them and, through
the reversed gradient, the backbone to make them indistinguishable.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxcls.adapt.grl import reverse_gradient

PARAMS_KEY = "domain_classifier"  # top-level entry of the train state's params


class DomainClassifier(nn.Module):
    """features [N, D] -> one logit per example (target = 1), through `hidden` ReLU units
    (0: linear)."""

    hidden: int = 256

    @nn.compact
    def __call__(self, x):
        if self.hidden:
            x = nn.relu(nn.Dense(self.hidden, name="hidden")(x))
        return nn.Dense(1, name="out")(x)[:, 0]


def domain_loss(classifier: DomainClassifier, params: dict, source: jax.Array,
                target: jax.Array, lam: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(binary cross-entropy per example of source [N, D] (label 0) and target [N, D] (label 1)
    features, each [N]), the features' gradient reversed and scaled by `lam`."""
    x = reverse_gradient(jnp.concatenate([source, target]).astype(jnp.float32), lam)
    logits = classifier.apply({"params": params}, x)
    n = source.shape[0]
    labels = jnp.concatenate([jnp.zeros(n), jnp.ones(target.shape[0])])
    bce = optax.sigmoid_binary_cross_entropy(logits, labels)
    return bce[:n], bce[n:]
