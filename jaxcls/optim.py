"""Learning-rate schedules and the optax optimizer a config describes, with parameter groups:
learning-rate and weight-decay multipliers, layer-wise decay, freezing and gradual unfreezing,
all keyed by regexes over parameter paths such as 'stage4_block2/Conv_0/kernel'."""

import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcls import sharding


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
    elif config.schedule in ("constant", "plateau"):  # plateau: cut by scale_by_plateau
        after = optax.constant_schedule(lr)
    else:
        raise ValueError(f"config.schedule={config.schedule!r}: use cosine, step, constant or "
                         f"plateau")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


# Top-level modules that come before the first block (layer 0 for layer-wise decay).
_EMBEDDINGS = re.compile(r"stem.*|patch_embed|patch_norm|cls|dist_token|pos_embedding")
_BLOCK = re.compile(r"(?:stage(\d+)_)?block(\d+)")
_DOWNSAMPLE = re.compile(r"stage(\d+)_downsample.*")


def layer_ids(names: list[str]) -> tuple[dict[str, int], int]:
    """({top-level module: layer index}, number of blocks L) for layer-wise learning-rate
    decay: embeddings/stem 0, blocks 1..L in order, a stage's downsampling with its first
    block, everything after the blocks (final norm, head) L + 1."""
    blocks = sorted((tuple(int(g or 0) for g in m.groups()), n) for n in names
                    if (m := _BLOCK.fullmatch(n)))
    ids = {n: i + 1 for i, (_, n) in enumerate(blocks)}
    first_of_stage = {}
    for (stage, _), n in blocks:
        first_of_stage.setdefault(stage, ids[n])
    for n in names:
        if n in ids:
            continue
        if _EMBEDDINGS.fullmatch(n):
            ids[n] = 0
        elif (m := _DOWNSAMPLE.fullmatch(n)) and int(m[1]) in first_of_stage:
            ids[n] = first_of_stage[int(m[1])]
        else:
            ids[n] = len(blocks) + 1
    return ids, len(blocks)


def _first_match(rules, path: str, default):
    for pattern, value in rules:
        if re.fullmatch(pattern, path):
            return value
    return default


def check_rules(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the key of a malformed regex rule."""
    for key in ("lr_multipliers", "wd_multipliers", "unfreeze_epochs"):
        for rule in config[key]:
            if len(rule) != 2 or not isinstance(rule[0], str):
                raise ValueError(f"config.{key}: each entry is (regex, number), got {rule!r}")
            _compile(key, rule[0])
    for pattern in config.freeze:
        _compile("freeze", pattern)


def _compile(key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"config.{key}: bad regex {pattern!r}: {e}") from None


def param_groups(config: ml_collections.ConfigDict, params, steps_per_epoch: int):
    """Per parameter: None when frozen for the whole run, else (learning-rate multiplier,
    weight decay, step it unfreezes at). Regexes are matched against the whole path."""
    check_rules(config)
    ids, num_blocks = layer_ids(list(params))

    def group(path, p):
        name = sharding.path_str(path)  # e.g. 'block3/attn/query/kernel'
        if any(re.fullmatch(pattern, name) for pattern in config.freeze):
            return None
        lr = float(_first_match(config.lr_multipliers, name, 1.0))
        if config.layer_decay != 1.0:
            lr *= config.layer_decay ** (num_blocks + 1 - ids[name.split("/")[0]])
        if lr == 0.0:
            return None
        decay = 0.0
        if p.ndim > 1:  # kernels, not biases or norm scales
            decay = config.weight_decay * float(_first_match(config.wd_multipliers, name, 1.0))
        epoch = _first_match(config.unfreeze_epochs, name, 0)
        return lr, decay, int(round(epoch * steps_per_epoch))

    return jax.tree_util.tree_map_with_path(group, params)


def _is_group(g) -> bool:
    """Leaves of a `param_groups` tree: None (frozen) or a (lr, decay, step) tuple."""
    return g is None or isinstance(g, tuple)


def _modules(names: list[str], most: int = 6) -> str:
    """The top-level modules of parameter paths, in order: 'stem, stage1_block0, ...'."""
    tops = list(dict.fromkeys(n.split("/")[0] for n in names))
    if len(tops) > most:
        tops = [*tops[:most - 2], f"... ({len(tops) - most + 2} more)", *tops[-2:]]
    return ", ".join(tops)


def describe_freezing(config: ml_collections.ConfigDict, params, steps_per_epoch: int
                      ) -> list[str]:
    """Log lines saying what `freeze`, `unfreeze_epochs` (and zero learning-rate multipliers)
    keep frozen and when each group starts training: parameter arrays, parameters and modules
    per group. No lines when nothing is frozen."""
    groups = jax.tree.leaves(param_groups(config, params, steps_per_epoch), is_leaf=_is_group)
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    buckets: dict[int, list[tuple[str, int]]] = {}  # -1: frozen for the run; else start step
    for (path, p), g in zip(flat, groups, strict=True):
        key = -1 if g is None else g[2]
        buckets.setdefault(key, []).append((sharding.path_str(path), int(np.prod(p.shape))))
    if set(buckets) == {0}:
        return []
    total = sum(n for b in buckets.values() for _, n in b)
    lines = []
    for key in sorted(buckets, key=lambda k: (k != -1, k)):
        names, sizes = [n for n, _ in buckets[key]], sum(n for _, n in buckets[key])
        what = (f"{len(names)} parameter arrays ({sizes:,} of {total:,} parameters) in "
                f"{_modules(names)}")
        if key == -1:
            lines.append(f"frozen for the whole run (config.freeze / zero lr multiplier): {what}")
        elif key == 0:
            lines.append(f"trained from the start: {what}")
        else:
            lines.append(f"frozen until step {key} (epoch {key / steps_per_epoch:g}, "
                         f"config.unfreeze_epochs), then trained: {what}")
    return lines


def frozen_mask(config: ml_collections.ConfigDict, params):
    """True for parameters frozen for the whole run (`freeze`, or a learning-rate multiplier
    of 0); their gradients need not be computed."""
    groups = param_groups(config, params, 1)
    return jax.tree.map(lambda g: g is None, groups, is_leaf=_is_group)


class FrozenUntilState(NamedTuple):
    count: jax.Array
    inner: optax.OptState


def frozen_until(step: int, inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner`, with zero updates (and its state, e.g. Adam's moments and count, untouched)
    before update number `step`: gradual unfreezing."""

    def init(params):
        return FrozenUntilState(jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        new_updates, inner_state = jax.lax.cond(
            state.count >= step,
            lambda: inner.update(updates, state.inner, params),
            lambda: (jax.tree.map(jnp.zeros_like, updates), state.inner))
        return new_updates, FrozenUntilState(state.count + 1, inner_state)

    return optax.GradientTransformation(init, update)


def _direction(config: ml_collections.ConfigDict, weight_decay: float
               ) -> optax.GradientTransformation:
    """The update before the learning rate: SGD (+ L2 on kernels) or Adam (+ decoupled decay)."""
    if config.optimizer == "sgd":
        chain = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
        if config.momentum:
            chain.append(optax.trace(config.momentum, nesterov=config.nesterov))
    elif config.optimizer == "adamw":
        chain = [optax.scale_by_adam(config.b1, config.b2)]
        if weight_decay:
            chain.append(optax.add_decayed_weights(weight_decay))
    else:
        raise ValueError(f"config.optimizer={config.optimizer!r}: use sgd or adamw")
    return optax.chain(*chain) if chain else optax.identity()


def create_optimizer(config: ml_collections.ConfigDict, schedule: optax.Schedule, params,
                     steps_per_epoch: int) -> optax.GradientTransformation:
    """Clipping (optional), then per parameter group (`param_groups`): frozen parameters get no
    state and no update; the others SGD or AdamW at schedule x their multiplier."""
    groups = param_groups(config, params, steps_per_epoch)
    labels = jax.tree.map(lambda g: "frozen" if g is None else repr(g), groups,
                          is_leaf=_is_group)
    transforms = {"frozen": optax.set_to_zero()}
    for g in jax.tree.leaves(groups, is_leaf=_is_group):
        if g is None or repr(g) in transforms:
            continue
        lr_mult, weight_decay, unfreeze_step = g
        direction = _direction(config, weight_decay)
        if unfreeze_step > 0:
            direction = frozen_until(unfreeze_step, direction)
        transforms[repr(g)] = optax.chain(
            direction, optax.scale_by_learning_rate(lambda n, m=lr_mult: m * schedule(n)))
    chain = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 \
        else []
    chain.append(optax.multi_transform(transforms, labels))
    if config.schedule == "plateau":
        chain.append(scale_by_plateau())
    return optax.chain(*chain)


class PlateauScale(NamedTuple):
    scale: jax.Array  # float32 scalar multiplying every update: the plateau cuts so far


def scale_by_plateau() -> optax.GradientTransformation:
    """Multiplies the updates by a scale held in the optimizer state, so it is checkpointed with
    it; the host lowers it between steps (`set_plateau_scale`), a new value, not a new program."""

    def init(params):
        del params
        return PlateauScale(jnp.ones((), jnp.float32))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def _is_plateau(x) -> bool:
    return isinstance(x, PlateauScale)


def plateau_scale(opt_state) -> float:
    """The plateau scale in `opt_state` (1.0 without scale_by_plateau); a host sync."""
    found = [s.scale for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
    return float(found[0]) if found else 1.0


def set_plateau_scale(opt_state, scale: float):
    """`opt_state` with its plateau scale set to `scale`, placed as the old one was (every
    process passes the same value, so this works across hosts too)."""
    return jax.tree.map(
        lambda s: PlateauScale(jax.make_array_from_callback(
            (), s.scale.sharding, lambda _: np.float32(scale)))
        if _is_plateau(s) else s, opt_state, is_leaf=_is_plateau)
