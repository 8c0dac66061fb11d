"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks"), as AutoAttack runs it: APGD-CE and APGD-DLR, untargeted
and targeted (APGD-T: one run per target class, the classes ranked 2nd, 3rd, ... by the clean
logits).

Each run starts at a random point of the ball's surface (L-inf: eps t / max|t| with t uniform
in [-1, 1]; L2: eps t / ||t|| with t Gaussian), takes steps of size 2 eps with momentum 0.75
(none on the first step), projected onto the ball and [0, 1], and keeps the point of highest
loss. At checkpoints (after 22% of the iterations, then at intervals shrinking by 3% down to
6%) an example's step size is halved, and it restarts from its best point and gradient, when
its loss rose in at most rho = 75% of the steps since the last checkpoint, or when its step
size was not halved at the last checkpoint and its best loss has not improved since. The
oscillation count reads the last k losses exactly as AutoAttack does (at the first checkpoint
it compares the first loss with the still-zero last entry of the history).

Batched: every example runs every restart (AutoAttack attacks only the examples still
robust; the result per example is the same, the randomness is drawn differently).
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxcls.attack import objectives, threat
from jaxcls.attack.pgd import LogitsFn, loss_and_grad

RHO = 0.75  # a step size is halved when the loss rose in at most this fraction of the steps
MOMENTUM = 0.75  # weight of the new step against the previous displacement


def checkpoints(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(whether iteration i ends a checkpoint interval, the interval's length k) for i in
    0..steps-1: the first after max(int(0.22 n), 1) iterations, each next one shorter by
    max(int(0.03 n), 1), never shorter than max(int(0.06 n), 1)."""
    k = max(int(0.22 * steps), 1)
    k_min, decrease = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
    is_check, length = np.zeros(steps, bool), np.zeros(steps, np.int32)
    counter = 0
    for i in range(steps):
        counter += 1
        if counter == k:
            is_check[i], length[i] = True, k
            counter, k = 0, max(k - decrease, k_min)
    return is_check, length


def start_point(key: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    if norm == "linf":
        t = jax.random.uniform(key, x.shape, jnp.float32, -1.0, 1.0)
        t = t / threat.per_example(threat.norms(t, "linf"), t)
    else:
        t = jax.random.normal(key, x.shape, jnp.float32)
        t = t / threat.per_example(threat.norms(t, "l2") + threat.TINY, t)
    return jnp.clip(x + eps * t, 0.0, 1.0)


def _project(x_adv: jax.Array, x: jax.Array, eps: float, norm: str) -> jax.Array:
    """AutoAttack's projection (L2: x + d / (||d|| + 1e-12) min(eps, ||d||))."""
    if norm == "linf":
        return threat.project(x_adv, x, eps, norm)
    d = x_adv - x
    n = threat.norms(d, "l2")
    scale = jnp.minimum(eps, n) / (n + threat.TINY)
    return jnp.clip(x + d * threat.per_example(scale, d), 0.0, 1.0)


def single_run(logits_fn: LogitsFn, loss, x: jax.Array, labels: jax.Array, key: jax.Array,
               eps: float, steps: int, norm: str, *loss_args, rho: float = RHO):
    """One APGD run maximising sum(loss(logits, labels, *loss_args)).
    Returns (adversarial images: the last iterate that was misclassified, else the start
    point; still correctly classified at every iterate [B] bool)."""
    is_check, length = (jnp.asarray(a) for a in checkpoints(steps))
    x_adv = start_point(key, x, eps, norm)
    value, logits, g = loss_and_grad(logits_fn, loss, x_adv, labels, *loss_args)
    b = x.shape[0]
    s = {"x_adv": x_adv, "x_old": x_adv, "grad": g, "x_best": x_adv, "grad_best": g,
         "loss_best": value, "x_best_adv": x_adv,
         "robust": jnp.argmax(logits, axis=1) == labels,
         "step": jnp.full((b,), 2.0 * eps, jnp.float32),
         "history": jnp.zeros((steps, b), jnp.float32),
         "loss_last_check": value, "reduced_last_check": jnp.ones((b,), bool)}

    def body(i, s):
        a = jnp.where(i > 0, MOMENTUM, 1.0)
        x_adv = s["x_adv"]
        step = threat.per_example(s["step"], x_adv)
        x1 = _project(x_adv + step * threat.unit(s["grad"], norm), x, eps, norm)
        x1 = _project(x_adv + (x1 - x_adv) * a + (x_adv - s["x_old"]) * (1 - a), x, eps, norm)
        value, logits, g = loss_and_grad(logits_fn, loss, x1, labels, *loss_args)
        correct = jnp.argmax(logits, axis=1) == labels
        history = s["history"].at[i].set(value)
        improved = value > s["loss_best"]
        x_best = threat.where(improved, x1, s["x_best"])
        grad_best = threat.where(improved, g, s["grad_best"])
        loss_best = jnp.where(improved, value, s["loss_best"])
        # Checkpoint: the losses that rose among the last k steps (indices wrap as in
        # AutoAttack's NumPy code).
        k = length[i]
        back = jnp.arange(steps)
        rose = history[(i - back) % steps] > history[(i - back - 1) % steps]
        count = jnp.sum(rose & (back < k)[:, None], axis=0)
        oscillating = count <= k * rho
        stalled = ~s["reduced_last_check"] & (s["loss_last_check"] >= loss_best)
        reduce = is_check[i] & (oscillating | stalled)
        return {"x_adv": threat.where(reduce, x_best, x1), "x_old": x_adv,
                "grad": threat.where(reduce, grad_best, g), "x_best": x_best,
                "grad_best": grad_best, "loss_best": loss_best,
                "x_best_adv": threat.where(~correct, x1, s["x_best_adv"]),
                "robust": s["robust"] & correct,
                "step": jnp.where(reduce, s["step"] / 2.0, s["step"]), "history": history,
                "loss_last_check": jnp.where(is_check[i], loss_best, s["loss_last_check"]),
                "reduced_last_check": jnp.where(is_check[i], oscillating | stalled,
                                                s["reduced_last_check"])}

    s = jax.lax.fori_loop(0, steps, body, s)
    return s["x_best_adv"], s["robust"]


def apgd(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, key: jax.Array, eps: float,
         steps: int = 100, norm: str = "linf", loss: str = "ce", restarts: int = 1,
         targeted: bool = False, target_classes: int = 9, rho: float = RHO) -> jax.Array:
    """APGD-CE / APGD-DLR (`loss`), or with `targeted` APGD-T on the targeted version of the
    loss, over the `target_classes` classes ranked highest after the prediction. Returns the
    adversarial images: for each example the first run's that fooled the model, else x."""
    threat.check_norm(norm)
    clean_logits = logits_fn(x)
    num_classes = clean_logits.shape[1]
    objectives.check_loss(loss, num_classes, targeted)
    objective = objectives.get(loss, targeted)
    runs = min(target_classes, num_classes - 1) if targeted else 1
    ranked = jnp.argsort(clean_logits, axis=1)[:, ::-1]  # classes by decreasing clean logit

    def one(r, carry):
        adv, robust = carry
        target = r // restarts + 1  # rank of the target class, 1 = the runner-up
        args = (ranked[:, target],) if targeted else ()
        x_r, robust_r = single_run(logits_fn, objective, x, labels, jax.random.fold_in(key, r),
                                   eps, steps, norm, *args, rho=rho)
        fooled = robust & ~robust_r
        return threat.where(fooled, x_r, adv), robust & robust_r

    robust = jnp.argmax(clean_logits, axis=1) == labels
    adv, _ = jax.lax.fori_loop(0, runs * restarts, one, (x, robust))
    return adv
