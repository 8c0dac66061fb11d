"""Classification losses, per example (the caller masks and averages).

Multi-class labels are int [N] or soft targets [N, C] (mixup); multi-label targets are multi-hot
float [N, C]. `make_loss(config)` picks the loss a config asks for.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

TASKS = ("multiclass", "multilabel")
LOSSES = ("cross_entropy", "focal")


def _targets(logits: jax.Array, labels: jax.Array, label_smoothing: float) -> jax.Array:
    num_classes = logits.shape[-1]
    targets = jax.nn.one_hot(labels, num_classes) if labels.ndim == 1 else labels
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
    """Cross-entropy of logits [N, C] against int labels [N] or soft targets [N, C] -> [N].

    Label smoothing mixes the targets with the uniform distribution: (1 - eps) * y + eps / C.
    """
    return optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                       _targets(logits, labels, label_smoothing))


def softmax_focal_loss(logits: jax.Array, labels: jax.Array, gamma: float,
                       label_smoothing: float = 0.0) -> jax.Array:
    """Multi-class focal loss -sum_c y_c (1 - p_c)^gamma log p_c -> [N] (Lin et al. 2017 with
    softmax probabilities); cross-entropy at gamma = 0."""
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
    focus = (1.0 - jnp.exp(log_p)) ** gamma
    return -jnp.sum(_targets(logits, labels, label_smoothing) * focus * log_p, axis=-1)


def sigmoid_focal_terms(logits: jax.Array, targets: jax.Array, gamma: float = 0.0,
                        alpha: float = -1.0) -> jax.Array:
    """Per label [N, C]: -alpha_t (1 - p_t)^gamma log p_t with p = sigmoid(logit),
    p_t = p where the target is 1 and 1 - p where it is 0, alpha_t = alpha or 1 - alpha likewise
    (alpha < 0: no alpha). gamma = 0 and alpha < 0 give binary cross-entropy."""
    logits, targets = logits.astype(jnp.float32), targets.astype(jnp.float32)
    bce = optax.sigmoid_binary_cross_entropy(logits, targets)  # = -log p_t, stable
    if gamma:
        p = jax.nn.sigmoid(logits)
        p_t = p * targets + (1.0 - p) * (1.0 - targets)
        bce = bce * (1.0 - p_t) ** gamma
    if alpha >= 0:
        bce = bce * (alpha * targets + (1.0 - alpha) * (1.0 - targets))
    return bce


def make_loss(config: ml_collections.ConfigDict
              ) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """loss(logits [N, C], labels) -> [N] for config.task, config.loss (cross_entropy | focal)
    and config.class_weights, explicit numbers by now (`resolve_class_weights`); multi-class:
    each example is weighted by its class's weight, multi-label: each label's term by its own."""
    w = parse_class_weights(config.class_weights)
    w = None if w is None else jnp.asarray(w)
    if config.task == "multilabel":
        def loss(logits, targets):
            alpha = config.focal_alpha if config.loss == "focal" else -1.0
            gamma = config.focal_gamma if config.loss == "focal" else 0.0
            if config.label_smoothing:  # each label's binary target moves towards 1/2
                targets = targets * (1.0 - config.label_smoothing) + config.label_smoothing / 2
            terms = sigmoid_focal_terms(logits, targets, gamma, alpha)
            return jnp.mean(terms if w is None else terms * w, axis=-1)
        return loss

    def loss(logits, labels):
        if config.loss == "focal":
            per_example = softmax_focal_loss(logits, labels, config.focal_gamma,
                                             config.label_smoothing)
        else:
            per_example = softmax_cross_entropy(logits, labels, config.label_smoothing)
        if w is None:
            return per_example
        # Soft targets (mixup) weight by their mixture of classes.
        weight = w[labels] if labels.ndim == 1 else labels @ w
        return per_example * weight
    return loss


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """n / (C * count_c) per class (scikit-learn's "balanced"), from int labels [N] or, for
    multi-label, multi-hot [N, C] (count_c = examples with label c); a class without examples
    gets weight 0 (it never occurs in the loss)."""
    labels = np.asarray(labels)
    counts = (labels.sum(0) if labels.ndim == 2
              else np.bincount(labels, minlength=num_classes)).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(labels) / (num_classes * counts), 0.0)
    return weights.astype(np.float32)


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming a bad task, loss or class-weight key."""
    if config.task not in TASKS:
        raise ValueError(f"config.task={config.task!r}: use one of {TASKS}")
    if config.loss not in LOSSES:
        raise ValueError(f"config.loss={config.loss!r}: use one of {LOSSES}")
    if config.focal_gamma < 0:
        raise ValueError(f"config.focal_gamma={config.focal_gamma} must be >= 0")
    if config.focal_alpha > 1:
        raise ValueError(f"config.focal_alpha={config.focal_alpha} must be <= 1 (< 0: off)")
    if config.focal_alpha >= 0 and (config.task, config.loss) != ("multilabel", "focal"):
        raise ValueError("config.focal_alpha weighs positives of task='multilabel' with "
                         "loss='focal'; for multiclass, weight classes with class_weights")
    if config.class_weights.strip() != "balanced":
        parse_class_weights(config.class_weights)
    if config.class_balanced_sampler and config.task == "multilabel":
        raise ValueError("config.class_balanced_sampler draws one class per example: it needs "
                         "task='multiclass' (for multilabel, use class_weights or focal loss)")


def parse_class_weights(spec: str) -> np.ndarray | None:
    """config.class_weights "w1,w2,..." -> float32 [C]; "" -> None."""
    if not spec.strip():
        return None
    if spec.strip() == "balanced":
        raise ValueError("config.class_weights='balanced' is resolved from the training labels "
                         "by resolve_class_weights before the loss is built")
    try:
        weights = np.array([float(x) for x in spec.split(",")], np.float32)
    except ValueError:
        raise ValueError(f"config.class_weights={spec!r}: use '', 'balanced' or "
                         f"comma-separated numbers") from None
    if (weights < 0).any():
        raise ValueError(f"config.class_weights={spec!r}: weights must be >= 0")
    return weights


def resolve_class_weights(config: ml_collections.ConfigDict, train_labels: np.ndarray | None,
                          num_classes: int) -> str:
    """config.class_weights with "balanced" replaced by the numbers, computed from the training
    labels; checks there is one weight per class."""
    spec = config.class_weights.strip()
    if spec == "balanced":
        if train_labels is None:
            raise ValueError(f"config.class_weights='balanced' needs the training labels, which "
                             f"{config.dataset!r} does not list up front; give the weights "
                             f"explicitly ('w1,w2,...')")
        return ",".join(f"{w:.6g}" for w in balanced_class_weights(train_labels, num_classes))
    weights = parse_class_weights(spec)
    if weights is not None and len(weights) != num_classes:
        raise ValueError(f"config.class_weights has {len(weights)} values; the dataset has "
                         f"{num_classes} classes")
    return spec
