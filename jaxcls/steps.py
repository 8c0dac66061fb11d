"""The train state and the pure, jittable train and eval steps."""

import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcls import adapt, distill, losses, metrics, optim
from jaxcls.attack import training as adversarial
from jaxcls.data import augment, tta
from jaxcls.probe import features


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any = None  # exponential moving average of params (config.ema_decay > 0)
    slow: Any = None  # lookahead's slow {"params", "batch_stats"} (config.lookahead_every > 0)


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_size: int, ema: bool = False, variables: dict | None = None,
               lookahead: bool = False, extra_params=None) -> TrainState:
    """Parameters (fresh, or the given `variables`: pretrained, or with a whitening kernel),
    BatchNorm statistics, optimizer state and, with `ema` / `lookahead`, the moving average /
    the slow weights starting at the parameters. `extra_params(rng, params)`: more top-level
    entries of params trained beside the model's (DANN's domain classifier), added where
    `variables` lacks them."""
    if variables is None:
        variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3)), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if extra_params is not None:
        params = {**extra_params(rng, params), **params}
    slow = {"params": params, "batch_stats": batch_stats}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=batch_stats, opt_state=tx.init(params),
                      ema_params=jax.tree.map(jnp.copy, params) if ema else None,
                      slow=jax.tree.map(jnp.copy, slow) if lookahead else None)


def _dtype(config: ml_collections.ConfigDict):
    return jnp.dtype(config.dtype)


def step_rngs(rng: jax.Array, step, micro=None) -> tuple[jax.Array, jax.Array]:
    """(augmentation rng, dropout rng) of train step `step` (and of micro-batch `micro` under
    gradient accumulation); python -m jaxcls.augviz derives its views the same way."""
    rng = jax.random.fold_in(rng, step)
    if micro is not None:
        rng = jax.random.fold_in(rng, micro)
    augment_rng, dropout_rng = jax.random.split(rng)
    return augment_rng, dropout_rng


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict, total_steps: int | None = None,
                    teacher: distill.Teacher | None = None):
    """train_step(state, batch, rng[, teacher_variables]) -> (state, Metrics); batch: image
    uint8, label, mask (and int index, epoch per example when an augment op needs them:
    `augment.needs_context`). The model's `num_classes` field sizes the soft targets;
    `total_steps` (the run's length) times config.lookahead_every's schedule. With a `teacher`
    (jaxcls/distill/), the loss is config.distill's and the step takes the teacher's
    variables. With config.domain_adaptation (jaxcls/adapt/), the batch also holds
    target_image and target_mask, and DANN's domain loss joins the label loss."""
    if config.lookahead_every > 0 and not total_steps:
        raise ValueError("config.lookahead_every needs the run's total_steps")
    dann = adapt.enabled(config)  # batch also holds target_image, target_mask
    if dann and not total_steps:
        raise ValueError("config.domain_adaptation needs the run's total_steps")
    k = config.grad_accum_steps
    pipeline = augment.from_config(config)
    loss = losses.make_loss(config)
    gather = metrics.gather_multilabel if config.task == "multilabel" else metrics.gather
    adversarial_loss = adversarial.make_objective(config, loss)  # None: config.adversarial off

    def loss_and_grads(params, batch_stats, micro, rngs, teacher_variables, lam):
        augment_rng, dropout_rng = rngs
        # Soft targets (mixed by mixup/CutMix) for the loss; the metrics keep the hard labels.
        context = ({key: micro[key] for key in ("index", "epoch")} if "epoch" in micro
                   else None)
        augmented = functools.partial(augment.apply, pipeline, images=micro["image"],
                                      labels=micro["label"], num_classes=model.num_classes,
                                      dtype=_dtype(config), context=context)
        images, targets = augmented(augment_rng)
        if teacher is not None:  # frozen: outside the differentiated function
            teacher_images = (images if config.distill.teacher_view == "same"
                              else augmented(jax.random.fold_in(augment_rng, 1))[0])
            teacher_logits = teacher.logits(teacher_variables, teacher_images, config.mean,
                                            config.std)
        if dann:  # the target images' own draw of the augmentation (their labels: unused)
            target_images = augment.apply(pipeline, jax.random.fold_in(augment_rng, 2),
                                          micro["target_image"], micro["label"],
                                          model.num_classes, _dtype(config))[0]
        frozen = optim.frozen_mask(config, params)

        def loss_fn(p):
            # No gradient work for parameters frozen for the whole run (a linear probe
            # then costs a forward pass of the backbone).
            p = jax.tree.map(lambda x, f: jax.lax.stop_gradient(x) if f else x, p, frozen)
            variables = {"params": p, "batch_stats": batch_stats}
            apply_kwargs = dict(train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng})
            domain = 0.0
            if adversarial_loss is not None:  # PGD-AT or TRADES: jaxcls/attack/training.py
                def forward(p_, x):
                    return model.apply({"params": p_, "batch_stats": batch_stats}, x,
                                       **apply_kwargs)

                logits, per_example, updates = adversarial_loss(
                    forward, p, images, targets, jax.random.fold_in(dropout_rng, 1))
                return jnp.sum(per_example * micro["mask"]), (logits, per_example, updates)
            if not dann:
                output, updates = model.apply(variables, images, **apply_kwargs)
            else:  # source and target in one forward; DANN's loss on the head's inputs
                n = images.shape[0]
                (output, updates), feats = features.apply_capturing_head_inputs(
                    model, variables, jnp.concatenate([images, target_images]), **apply_kwargs)
                output = output[:n]
                d_source, d_target = adapt.domain_loss(adapt.classifier(config),
                                                       p[adapt.PARAMS_KEY], feats[:n],
                                                       feats[n:], lam)
                domain = config.domain_adaptation.weight * 0.5 * (
                    jnp.sum(d_source * micro["mask"]) + jnp.sum(d_target * micro["target_mask"]))
            if teacher is None:
                logits, per_example = output, loss(output, targets)
            else:
                per_example, logits = distill.distillation_loss(
                    config.distill.loss, output, targets, teacher_logits, loss,
                    config.distill.alpha, config.distill.temperature)
            return (jnp.sum(per_example * micro["mask"]) + domain,
                    (logits, per_example, updates))

        (_, (logits, per_example, updates)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(params)
        m = gather(per_example, logits, micro["label"], micro["mask"])
        return grads, updates.get("batch_stats", batch_stats), m

    def train_step(state: TrainState, batch: dict, rng: jax.Array, teacher_variables=None):
        lam = (adapt.dann_lambda(state.step / total_steps, config.domain_adaptation.gamma)
               if dann else None)  # the gradient reversal's scale at this point of the run
        if k == 1:
            grads, batch_stats, m = loss_and_grads(state.params, state.batch_stats, batch,
                                                   step_rngs(rng, state.step), teacher_variables,
                                                   lam)
        else:
            # Micro-batches: [B, ...] -> [k, B/k, ...], micro-batch i = rows i, i+k, ..., so
            # every device keeps its own rows. Gradients of the masked loss *sum* add up
            # exactly; one division by the number of real examples then gives the batch mean.
            micro = jax.tree.map(
                lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)

            def body(carry, xs):
                grads_sum, batch_stats = carry
                mb, i = xs
                grads, batch_stats, m = loss_and_grads(state.params, batch_stats, mb,
                                                       step_rngs(rng, state.step, i),
                                                       teacher_variables, lam)
                return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), m

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            # (A scan, not k unrolled copies: compile time stays flat in k. XLA:CPU runs loop
            # bodies several times slower, which is why k == 1 skips it.)
            (grads, batch_stats), ms = jax.lax.scan(body, (zeros, state.batch_stats),
                                                    (micro, jnp.arange(k)))
            m = jax.tree.map(lambda x: jnp.sum(x, axis=0), ms)  # Average totals/counts add
        count = jnp.maximum(jnp.sum(batch["mask"]), 1.0)
        grads = jax.tree.map(lambda g: g / count, grads)
        m = metrics.with_grad_norm(m, optax.tree.norm(grads))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if config.ema_decay > 0:
            ema_params = optax.incremental_update(params, ema_params, 1.0 - config.ema_decay)
        slow = state.slow
        if config.lookahead_every > 0:
            fast, slow = optim.lookahead_sync(
                {"params": params, "batch_stats": batch_stats}, slow, state.step + 1,
                total_steps, config.lookahead_every, config.lookahead_decay,
                config.lookahead_power)
            params, batch_stats = fast["params"], fast["batch_stats"]
        new = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema_params=ema_params, slow=slow)
        return new, m

    return train_step


def make_eval_step(model: nn.Module, config: ml_collections.ConfigDict,
                   teacher: distill.Teacher | None = None):
    """eval_step(state, batch[, teacher_variables]) -> Metrics, with running BatchNorm
    statistics. The eval loss is the plain cross-entropy (binary per label for multilabel, mean
    over labels), whatever the training loss, so that runs stay comparable. With
    config.eval_tta, the logits are the weighted mean of the views' (`tta.tta_views`, as airbench
    averages them). With a `teacher`, the metrics add the student's top-1 agreement with it and
    KL(teacher || student) at temperature 1, the teacher seeing the same views."""
    tta.parse(config.eval_tta, config.crop_frac)

    def eval_step(state: TrainState, batch: dict, teacher_variables=None) -> metrics.Metrics:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        views = tta.tta_views(batch["image"], config.eval_tta, config.crop_frac)
        weights = tta.view_weights(config.eval_tta, config.crop_frac)
        v, n = views.shape[:2]
        views = views.swapaxes(0, 1).reshape(n * v, *views.shape[2:])  # each device: its rows
        images = augment.normalize(views, config.mean, config.std, _dtype(config))
        logits = model.apply(variables, images, train=False).reshape(n, v, -1)
        logits = jnp.einsum("v,nvc->nc", weights, logits)
        if config.task == "multilabel":
            loss = jnp.mean(losses.sigmoid_focal_terms(logits, batch["label"]), axis=-1)
            return metrics.gather_multilabel(loss, logits, batch["label"], batch["mask"],
                                             collect=True)
        loss = losses.softmax_cross_entropy(logits, batch["label"])
        m = metrics.gather(loss, logits, batch["label"], batch["mask"])
        if teacher is None:
            return m
        teacher_logits = jnp.einsum("v,nvc->nc", weights, teacher.logits(
            teacher_variables, images, config.mean, config.std).reshape(n, v, -1))
        return metrics.with_teacher(m, distill.agreement(logits, teacher_logits),
                                    distill.kl_divergence(logits, teacher_logits),
                                    batch["mask"])

    return eval_step
