"""Adversarial training, as `config.adversarial` turns it on in the train step
(jaxcls/steps.py): PGD-AT (Madry et al. 2018) and TRADES (Zhang et al. 2019).

- pgd: each batch, after augmentation, is replaced by PGD adversarial examples of the run's own
  loss (label smoothing, mixup's soft targets and class weights included), from a random start
  in the eps-ball; the model trains on those alone. The logged train accuracy is on them.
- trades: loss(clean) + beta KL(p(clean) || p(adversarial)), the adversarial examples
  maximising that KL from the clean image plus 0.001 N(0, 1) noise, as TRADES' code starts
  them; the logged train accuracy is on the clean images.

The attack runs in pixel space [0, 1] (the normalisation undone and redone around the model)
against the model as the step trains it: training mode, the batch's BatchNorm statistics and
dropout mask, its parameters held fixed; the statistics the attack's passes would collect are
dropped. An augmentation that leaves [0, 1] (random erasing's noise) widens the box to include
the augmented pixel. PGD-AT multiplies the step's cost by about steps + 1, TRADES by steps + 2.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections

from jaxcls.attack import pgd, threat

METHODS = ("none", "pgd", "trades")
TRADES_START_STD = 1e-3  # TRADES' code starts its attack at x + 0.001 N(0, 1)

# forward(params, normalised images) -> (logits, new batch_stats): the model in training mode.
Forward = Callable[[dict, jax.Array], tuple[jax.Array, dict]]


def check(config: ml_collections.ConfigDict) -> None:
    """Fails on a config.adversarial the train step cannot use, naming the key."""
    a = config.adversarial
    if a.method not in METHODS:
        raise ValueError(f"config.adversarial.method={a.method!r}: use one of {METHODS}")
    if a.method == "none":
        return
    threat.check_norm(a.norm)
    if a.eps < 0 or a.steps < 1 or a.step_size < 0 or a.beta < 0:
        raise ValueError(f"config.adversarial: eps={a.eps}, steps={a.steps}, step_size="
                         f"{a.step_size}, beta={a.beta}: eps, step_size and beta >= 0, "
                         f"steps >= 1")
    if a.method == "trades" and config.task != "multiclass":
        raise ValueError("config.adversarial.method='trades' compares softmax outputs: "
                         "multiclass runs only")


def _kl(p: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(p || softmax(logits)) per example (0 log 0 = 0)."""
    log_q = jax.nn.log_softmax(logits.astype(jnp.float32))
    return jnp.sum(jnp.where(p > 0, p * (jnp.log(jnp.where(p > 0, p, 1.0)) - log_q), 0.0),
                   axis=-1)


def make_objective(config: ml_collections.ConfigDict, loss):
    """None for config.adversarial.method='none'; otherwise objective(forward, params,
    normalised images, targets, rng) -> (logits, per-example loss, new batch_stats), with
    `loss(logits, targets) -> [B]` the run's loss."""
    check(config)
    a = config.adversarial
    if a.method == "none":
        return None
    mean = jnp.asarray(config.mean, jnp.float32)
    std = jnp.asarray(config.std, jnp.float32)
    dtype = jnp.dtype(config.dtype)
    step_size = a.step_size or pgd.default_step_size(a.eps, a.steps)

    def attack(forward, params, images, rng, objective, start, *objective_args):
        """Adversarial normalised images: PGD on `objective` from `start(x, lo, hi)`."""
        x = images.astype(jnp.float32) * std + mean
        lo, hi = jnp.minimum(x, 0.0), jnp.maximum(x, 1.0)
        fixed = jax.lax.stop_gradient(params)

        def logits_fn(x_adv):
            return forward(fixed, ((x_adv - mean) / std).astype(dtype))[0]

        x_adv = pgd.pgd_steps(logits_fn, objective, x, start(rng, x, lo, hi), a.eps, a.steps,
                              step_size, a.norm, *objective_args, lo=lo, hi=hi)
        return jax.lax.stop_gradient(((x_adv - mean) / std).astype(dtype))

    def pgd_at(forward: Forward, params, images, targets, rng):
        adv = attack(forward, params, images, rng, loss,
                     lambda k, x, lo, hi: pgd.random_start(k, x, a.eps, a.norm, lo, hi), targets)
        logits, updates = forward(params, adv)
        return logits, loss(logits, targets), updates

    def trades(forward: Forward, params, images, targets, rng):
        logits, updates = forward(params, images)
        p_clean = jax.nn.softmax(logits.astype(jnp.float32))

        def start(k, x, lo, hi):
            return jnp.clip(x + TRADES_START_STD * jax.random.normal(k, x.shape), lo, hi)

        adv = attack(forward, params, images, rng, lambda z, p: _kl(p, z), start,
                     jax.lax.stop_gradient(p_clean))
        adv_logits, _ = forward(params, adv)
        return logits, loss(logits, targets) + a.beta * _kl(p_clean, adv_logits), updates

    return {"pgd": pgd_at, "trades": trades}[a.method]
