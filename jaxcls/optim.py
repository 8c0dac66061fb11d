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


def piecewise_linear(lr: float, points, total_steps: int) -> optax.Schedule:
    """lr x the piecewise-linear interpolation of `points` ((fraction of total_steps,
    multiplier), ...), constant beyond the first and last point (as np.interp)."""
    xs = jnp.asarray([x * total_steps for x, _ in points], jnp.float32)
    ys = jnp.asarray([y for _, y in points], jnp.float32)
    return lambda step: lr * jnp.interp(jnp.asarray(step, jnp.float32), xs, ys)


def check_schedule_points(points) -> None:
    """Raises ValueError unless `points` are >= 2 (fraction, multiplier) pairs, fractions
    increasing in [0, 1]."""
    fractions = [p[0] for p in points] if all(len(p) == 2 for p in points) else None
    if (fractions is None or len(points) < 2 or fractions != sorted(fractions)
            or not 0.0 <= fractions[0] <= fractions[-1] <= 1.0):
        raise ValueError(f"config.schedule_points={tuple(points)!r}: need two or more "
                         f"(fraction of the run, multiplier) pairs, fractions increasing in "
                         f"[0, 1]")


def create_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int, total_steps: int
                    ) -> optax.Schedule:
    """Linear warm-up from 0 to learning_rate, then cosine / step / constant; or
    piecewise_linear over config.schedule_points (which then includes any warm-up)."""
    warmup = min(resolve_steps(config, "warmup", steps_per_epoch) or 0, total_steps)
    lr = config.learning_rate
    if config.schedule == "piecewise_linear":
        check_schedule_points(config.schedule_points)
        if warmup:
            raise ValueError("config.schedule='piecewise_linear' has its warm-up in "
                             "config.schedule_points: leave warmup_epochs/warmup_steps unset")
        return piecewise_linear(lr, config.schedule_points, total_steps)
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
        raise ValueError(f"config.schedule={config.schedule!r}: use cosine, step, constant, "
                         f"plateau or piecewise_linear")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


# Top-level modules that come before the first block (layer 0 for layer-wise decay).
_EMBEDDINGS = re.compile(r"stem.*|patch_embed|patch_norm|pre_norm|cls|dist_token|pos_embedding")
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
    for key in ("lr_multipliers", "wd_multipliers", "unfreeze_epochs", "freeze_epochs"):
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


class Group(NamedTuple):
    """How one parameter trains (`param_groups`)."""
    lr: float  # learning-rate multiplier
    decay: float  # weight-decay coefficient
    start: int  # the step it starts training at (config.unfreeze_epochs)
    stop: int | None  # the step it stops training at (config.freeze_epochs); None: never
    direction: str  # sgd | adamw | muon (config.optimizer muon: conv kernels only)


def param_groups(config: ml_collections.ConfigDict, params, steps_per_epoch: int):
    """Per parameter: None when frozen for the whole run, else its `Group`. Regexes are matched
    against the whole path. Weight decay goes on kernels only unless config.decay_all; with
    config.decoupled_decay, weight_decay is the decay per step at the peak learning rate,
    whatever the parameter's multiplier (its coefficient is divided by learning_rate x
    multiplier, which the update multiplies back)."""
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
        if p.ndim > 1 or config.decay_all:  # by default kernels, not biases or norm scales
            decay = config.weight_decay * float(_first_match(config.wd_multipliers, name, 1.0))
            if config.decoupled_decay and decay:
                decay /= config.learning_rate * lr
        epoch = _first_match(config.unfreeze_epochs, name, 0)
        stop = _first_match(config.freeze_epochs, name, None)
        direction = config.optimizer
        if direction == "muon" and p.ndim != 4:  # Newton-Schulz on conv filters only
            direction = "sgd"
        return Group(lr, decay, int(round(epoch * steps_per_epoch)),
                     None if stop is None else int(round(stop * steps_per_epoch)), direction)

    return jax.tree_util.tree_map_with_path(group, params)


def _is_group(g) -> bool:
    """Leaves of a `param_groups` tree: None (frozen) or a `Group`."""
    return g is None or isinstance(g, Group)


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
        key = -1 if g is None else g.start
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


def frozen_until(step: int, inner: optax.GradientTransformation, stop: int | None = None
                 ) -> optax.GradientTransformation:
    """`inner`, with zero updates (and its state, e.g. Adam's moments and count, untouched)
    before update number `step` (gradual unfreezing) and, given `stop`, from update number
    `stop` on (config.freeze_epochs: airbench stops training its whitening bias)."""

    def init(params):
        return FrozenUntilState(jnp.zeros((), jnp.int32), inner.init(params))

    def update(updates, state, params=None):
        active = state.count >= step
        if stop is not None:
            active &= state.count < stop
        new_updates, inner_state = jax.lax.cond(
            active,
            lambda: inner.update(updates, state.inner, params),
            lambda: (jax.tree.map(jnp.zeros_like, updates), state.inner))
        return new_updates, FrozenUntilState(state.count + 1, inner_state)

    return optax.GradientTransformation(init, update)


_NS_COEFFS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic Newton-Schulz coefficients


def newton_schulz(g: jax.Array, steps: int, eps: float = 1e-7) -> jax.Array:
    """About the orthogonal factor U V^T of matrix g = U S V^T (singular values pushed towards
    1 by `steps` quintic Newton-Schulz iterations on g / |g|_F), as airbench's Muon."""
    a, b, c = _NS_COEFFS
    x = g / (jnp.linalg.norm(g) + eps)
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


def orthogonalize_kernels(steps: int) -> optax.GradientTransformation:
    """Each update of a conv kernel [H, W, I, O] -> `newton_schulz` of it as an [H W I, O]
    matrix (the order of its rows does not change the result)."""

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: newton_schulz(u.reshape(-1, u.shape[-1]), steps)
                            .reshape(u.shape).astype(u.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _direction(config: ml_collections.ConfigDict, weight_decay: float, direction: str
               ) -> optax.GradientTransformation:
    """The update before the learning rate: SGD (+ L2), Adam (+ decoupled decay) or Muon
    (Nesterov momentum orthogonalised by Newton-Schulz, + decoupled decay)."""
    if direction == "sgd":
        chain = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
        if config.momentum:
            chain.append(optax.trace(config.momentum, nesterov=config.nesterov))
    elif direction == "adamw":
        chain = [optax.scale_by_adam(config.b1, config.b2)]
        if weight_decay:
            chain.append(optax.add_decayed_weights(weight_decay))
    elif direction == "muon":
        # torch-style Nesterov momentum (a sum, not a bias-corrected average, as optax's
        # scale_by_muon: airbench's first steps), then orthogonalised
        chain = [optax.trace(config.muon_momentum, nesterov=True),
                 orthogonalize_kernels(config.muon_ns_steps)]
        if weight_decay:
            chain.append(optax.add_decayed_weights(weight_decay))
    else:
        raise ValueError(f"config.optimizer={config.optimizer!r}: use sgd, adamw or muon")
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
        direction = _direction(config, g.decay, g.direction)
        if g.start > 0 or g.stop is not None:
            direction = frozen_until(g.start, direction, g.stop)
        chain = [direction, optax.scale_by_learning_rate(lambda n, m=g.lr: m * schedule(n))]
        if g.direction == "muon" and config.muon_renormalize:
            chain.append(renormalize_kernels())
        transforms[repr(g)] = optax.chain(*chain)
    chain = [optax.clip_by_global_norm(config.grad_clip_norm)] if config.grad_clip_norm > 0 \
        else []
    chain.append(optax.multi_transform(transforms, labels))
    if config.schedule == "plateau":
        chain.append(scale_by_plateau())
    return optax.chain(*chain)


def renormalize_kernels() -> optax.GradientTransformation:
    """Adds to each (learning-rate scaled) update what first rescales its kernel to Frobenius
    norm sqrt(output channels), as airbench's Muon does before each step: with BatchNorm after
    every conv the kernel's scale is free, and fixing it keeps the step relative to it."""

    def update(updates, state, params=None):
        def one(u, p):
            scale = jnp.sqrt(jnp.float32(p.shape[-1])) / jnp.linalg.norm(p)
            return u + p * (scale - 1.0)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


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


def lookahead_decay(step, total_steps: int, base: float, power: float) -> jax.Array:
    """The fraction of the slow weights kept at a lookahead sync after update `step`
    (1-based): base x (step / total_steps)^power, and 1 from the last step on (the run then
    ends on the slow weights). airbench: base 0.95^5, power 3."""
    t = jnp.asarray(step, jnp.float32)
    return jnp.where(t >= total_steps, 1.0, base * (t / total_steps) ** power)


def lookahead_sync(fast, slow, step, total_steps: int, every: int, base: float, power: float):
    """(fast, slow) after update `step` (1-based): every `every` steps and at the last one,
    slow <- decay x slow + (1 - decay) x fast, fast <- slow (`lookahead_decay`); else as they
    are. Float leaves only (the trees may hold BatchNorm statistics)."""
    decay = lookahead_decay(step, total_steps, base, power)

    def sync(fast, slow):
        new = jax.tree.map(lambda f, s: (decay * s + (1.0 - decay) * f).astype(s.dtype),
                           fast, slow)
        return new, new

    due = (jnp.asarray(step) % every == 0) | (jnp.asarray(step) >= total_steps)
    return jax.lax.cond(due, sync, lambda f, s: (f, s), fast, slow)
