"""Monte Carlo dropout (Gal & Ghahramani, 2016): the predictive distribution as the mean of N
forward passes with the model's dropout layers sampling, BatchNorm and everything else in eval
mode. Uncertainty per example: the predictive entropy H[mean p] and the mutual information
between the prediction and the weights, H[mean p] - mean H[p] (the part of the entropy that
the dropout samples disagree on).

    python -m jaxcls.evaluate --workdir=W --mc_dropout=20   -> eval/test_mc20/
    python -m jaxcls.predict --workdir=W --mc_dropout=20 IMAGES...

Every `nn.Dropout` with a rate above 0 samples (a run's config.dropout_rate and
config.head_dropout_rate), through `nn.intercept_methods`, so no model needs a flag for it;
stochastic depth (drop path) stays off, as in eval. Sample s of every batch uses the key
fold_in(key(seed), s): the same call gives the same numbers.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def sampled_dropout(next_fun, args, kwargs, context):
    """An `nn.intercept_methods` interceptor: each `nn.Dropout` call draws its mask as in
    training (the module's own rate, broadcast_dims and rng collection) whatever its
    `deterministic`; every other call runs unchanged."""
    module = context.module
    if not isinstance(module, nn.Dropout) or context.method_name != "__call__" \
            or module.rate == 0.0:
        return next_fun(*args, **kwargs)
    x = args[0]
    keep = 1.0 - module.rate
    shape = list(x.shape)
    for dim in module.broadcast_dims:
        shape[dim] = 1
    mask = jax.random.bernoulli(module.make_rng(module.rng_collection), keep, shape)
    return jnp.where(jnp.broadcast_to(mask, x.shape), x / keep, jnp.zeros_like(x))


def dropout_rates(model: nn.Module, variables: dict, image_size: int) -> list[float]:
    """The rates of the `nn.Dropout` calls above 0 in one eval forward pass of `model`."""
    rates = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dropout) and context.method_name == "__call__" \
                and context.module.rate > 0:
            rates.append(float(context.module.rate))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, image_size, image_size, 3)),
                                             train=False), variables)
    return rates


def check_samples(samples: int, rates: list[float], workdir: str) -> None:
    """Raises ValueError for fewer than 2 samples or a model with no dropout to sample."""
    if samples < 2:
        raise ValueError(f"--mc_dropout={samples}: use 2 or more samples (0: off)")
    if not rates:
        raise ValueError(f"--mc_dropout: {workdir}'s model has no dropout layer with a rate "
                         f"above 0 (train it with config.dropout_rate or "
                         f"config.head_dropout_rate > 0): every sample would be the same")


def sampled_log_probs(predict, samples: int, seed: int = 0):
    """From `predict(variables, images, rngs)` -> log-probabilities [B, C] (evaluate's, with
    its TTA), the pure (variables, images) -> {"log_probs": log of the mean probability over
    `samples` dropout samples [B, C], "expected_entropy": mean over samples of each sample's
    entropy [B]}."""
    def mc(variables, images):
        def one(s):
            with nn.intercept_methods(sampled_dropout):
                log_p = predict(variables, images,
                                {"dropout": jax.random.fold_in(jax.random.key(seed), s)})
            return log_p, -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)

        log_ps, entropies = jax.lax.map(one, jnp.arange(samples))
        return {"log_probs": jax.nn.logsumexp(log_ps, axis=0) - jnp.log(samples),
                "expected_entropy": jnp.mean(entropies, axis=0)}

    return mc


def uncertainty(log_probs: np.ndarray, expected_entropy: np.ndarray) -> dict[str, np.ndarray]:
    """Per example: predictive entropy H[mean p] and mutual information H[mean p] - mean H[p]
    (nats; clipped at 0 against rounding)."""
    log_probs = np.asarray(log_probs, np.float64)
    entropy = -np.sum(np.exp(log_probs) * log_probs, axis=-1)
    return {"predictive_entropy": entropy,
            "mutual_information": np.maximum(entropy - expected_entropy, 0.0)}


def summary(labels: np.ndarray, log_probs: np.ndarray, expected_entropy: np.ndarray,
            samples: int) -> dict:
    """The figures evaluate reports: mean entropy and mutual information, and how well each
    ranks the misclassified examples above the correct ones (ROC AUC; None when every
    prediction is right or every one wrong)."""
    from sklearn.metrics import roc_auc_score

    u = uncertainty(log_probs, expected_entropy)
    wrong = np.argmax(log_probs, axis=-1) != labels
    both = 0 < wrong.sum() < len(wrong)
    return {"samples": samples,
            "mean_predictive_entropy": float(np.mean(u["predictive_entropy"])),
            "mean_mutual_information": float(np.mean(u["mutual_information"])),
            "error_auroc_predictive_entropy": (
                float(roc_auc_score(wrong, u["predictive_entropy"])) if both else None),
            "error_auroc_mutual_information": (
                float(roc_auc_score(wrong, u["mutual_information"])) if both else None)}
