"""Learning-rate schedules and the optax optimizer a config describes."""

import jax
import ml_collections
import optax


def resolve_steps(config: ml_collections.ConfigDict, prefix: str, steps_per_epoch: int
                  ) -> int | None:
    """`<prefix>_steps`, else `<prefix>_epochs` * steps_per_epoch (rounded), else None."""
    steps, epochs = config.get(f"{prefix}_steps"), config.get(f"{prefix}_epochs")
    if steps is not None:
        return int(steps)
    if epochs is not None:
        return int(round(epochs * steps_per_epoch))
    return None


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
                    ) -> optax.Schedule:
    """Linear warm-up from 0 to learning_rate, then cosine / step / constant."""
    warmup = min(resolve_steps(config, "warmup", steps_per_epoch) or 0, total_steps)
    lr = config.learning_rate
    if config.schedule == "cosine":
        after = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1),
                                            alpha=config.min_learning_rate / lr if lr else 0.0)
    elif config.schedule == "step":
        boundaries = {int(round(e * steps_per_epoch)) - warmup: config.decay_factor
                      for e in config.decay_epochs if round(e * steps_per_epoch) > warmup}
        after = optax.piecewise_constant_schedule(lr, boundaries)
    elif config.schedule == "constant":
        after = optax.constant_schedule(lr)
    else:
        raise ValueError(f"config.schedule={config.schedule!r}: use cosine, step or constant")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def decay_mask(params) -> object:
    """True for weights that get weight decay: kernels, not biases or norm scales (ndim <= 1)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule
                     ) -> optax.GradientTransformation:
    """Clipping (optional), then SGD (+ L2 on kernels) or AdamW (decoupled decay on kernels)."""
    chain = []
    if config.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
    if config.optimizer == "sgd":
        if config.weight_decay:
            chain.append(optax.add_decayed_weights(config.weight_decay, mask=decay_mask))
        chain.append(optax.sgd(schedule, momentum=config.momentum or None,
                               nesterov=config.nesterov))
    elif config.optimizer == "adamw":
        chain.append(optax.adamw(schedule, b1=config.b1, b2=config.b2,
                                 weight_decay=config.weight_decay, mask=decay_mask))
    else:
        raise ValueError(f"config.optimizer={config.optimizer!r}: use sgd or adamw")
    return optax.chain(*chain)
