"""FGSM (Goodfellow et al. 2015) and PGD (Madry et al. 2018) in pixel space [0, 1].

An attack takes `logits_fn` (images [B, H, W, C] in [0, 1] -> logits [B, K], the run's
normalisation inside it), the clean images `x` and their labels, and returns adversarial images
in the eps-ball around `x` and in [0, 1]. Each example's perturbation depends only on its own
gradient (models in inference mode), so a batch attacks its examples independently.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcls.attack import objectives, threat

LogitsFn = Callable[[jax.Array], jax.Array]


def default_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s 2.5 eps / steps: the walk can cross the ball from a random start
    (2/255 for eps=8/255 and 10 steps, torchattacks' default)."""
    return 2.5 * eps / max(steps, 1)


def loss_and_grad(logits_fn: LogitsFn, loss, x_adv: jax.Array, *args):
    """(per-example loss [B], logits, d sum(loss) / d x_adv)."""
    def total(xa):
        logits = logits_fn(xa)
        per_example = loss(logits, *args)
        return jnp.sum(per_example), (per_example, logits)

    (_, (per_example, logits)), g = jax.value_and_grad(total, has_aux=True)(x_adv)
    return per_example, logits, g


def fgsm(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, eps: float,
         norm: str = "linf") -> jax.Array:
    """One step of size eps along the cross-entropy gradient's sign (L-inf) or its direction
    (L2, the fast gradient method), clipped to [0, 1]."""
    _, _, g = loss_and_grad(logits_fn, objectives.cross_entropy, x, labels)
    return jnp.clip(x + eps * threat.unit(g, norm), 0.0, 1.0)


def random_start(key: jax.Array, x: jax.Array, eps: float, norm: str, lo=0.0, hi=1.0
                 ) -> jax.Array:
    """x plus a random point of the ball, clipped to [lo, hi]: uniform per pixel in [-eps, eps]
    (L-inf); a uniformly random direction at a radius uniform in [0, eps] (L2), as
    torchattacks draws them."""
    if norm == "linf":
        d = jax.random.uniform(key, x.shape, jnp.float32, -eps, eps)
    else:
        direction_key, radius_key = jax.random.split(key)
        d = jax.random.normal(direction_key, x.shape, jnp.float32)
        r = jax.random.uniform(radius_key, (x.shape[0],), jnp.float32)
        d = d * threat.per_example(r * eps / (threat.norms(d, "l2") + threat.TINY), d)
    return jnp.clip(x + d, lo, hi)


def pgd_steps(logits_fn: LogitsFn, loss, x: jax.Array, x_adv: jax.Array, eps: float,
              steps: int, step_size: float, norm: str, *loss_args, lo=0.0, hi=1.0,
              unroll: bool | None = None) -> jax.Array:
    """`steps` steps of projected gradient ascent on sum(loss) from x_adv. `unroll` (default:
    up to 8 steps) writes the steps out instead of a fori_loop: XLA:CPU runs loop bodies
    slower, while long unrolled attacks compile slowly."""
    def body(_, xa):
        _, _, g = loss_and_grad(logits_fn, loss, xa, *loss_args)
        return threat.project(xa + step_size * threat.unit(g, norm), x, eps, norm, lo, hi)

    if unroll is None:
        unroll = steps <= 8
    if unroll:
        for i in range(steps):
            x_adv = body(i, x_adv)
        return x_adv
    return jax.lax.fori_loop(0, steps, body, x_adv)


def pgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array, eps: float,
        steps: int = 10, step_size: float | None = None, norm: str = "linf",
        restarts: int = 1, random: bool = True, loss: str = "ce") -> jax.Array:
    """PGD on `loss` (ce | dlr): from a random start (`random`), `steps` steps of size
    `step_size` (default 2.5 eps / steps), each projected onto the ball and [0, 1]; with
    `restarts` > 1, the first restart that fools the model is kept per example, and for
    examples never fooled the one with the highest loss."""
    threat.check_norm(norm)
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    objective = objectives.get(loss, targeted=False)

    def one(k):
        start = random_start(k, x, eps, norm) if random else x
        x_adv = pgd_steps(logits_fn, objective, x, start, eps, steps, step_size, norm, labels)
        logits = logits_fn(x_adv)
        return x_adv, jnp.argmax(logits, axis=1) != labels, objective(logits, labels)

    def restart(r, carry):
        best, fooled, value = carry
        x_r, fooled_r, value_r = one(jax.random.fold_in(key, r))
        better = (fooled_r & ~fooled) | (~fooled_r & ~fooled & (value_r > value))
        return (threat.where(better, x_r, best), fooled | fooled_r,
                jnp.where(better, value_r, value))

    carry = one(jax.random.fold_in(key, 0))
    if restarts > 1:  # one compiled restart, run restarts - 1 more times
        carry = jax.lax.fori_loop(1, restarts, restart, carry)
    return carry[0]
