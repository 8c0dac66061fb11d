"""`run(config, workdir)`: train, evaluate, checkpoint and resume. Reads top to bottom."""

import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxcls import (
    adapt,
    checkpoint,
    defaults,
    distill,
    losses,
    metrics,
    models,
    monitor,
    optim,
    preemption,
    sharding,
    steps,
    thresholds,
    weights,
    writers,
)
from jaxcls.attack import training as adversarial
from jaxcls.data import augment, loader, sources, tta
from jaxcls.models import whitening
from jaxcls.quantize import qat


def validate(config: ml_collections.ConfigDict) -> None:
    """Fails on a key jaxcls does not know or a value it cannot use, naming the key."""
    known = defaults.get_config()
    unknown = sorted(set(config.keys()) - set(known.keys()))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; valid keys are listed in "
                         f"jaxcls/defaults.py")
    required = [k for k in config.keys() if config[k] is None and known[k] is not None]
    if required:
        raise ValueError(f"this recipe leaves config.{required[0]} to the command line: pass "
                         f"--config.{required[0]}=...")
    loader.check_input_config(config)
    if config.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"config.dtype={config.dtype!r}: use float32 or bfloat16")
    per_step = jax.device_count() * config.grad_accum_steps
    if config.batch_size <= 0 or config.batch_size % per_step:
        raise ValueError(f"config.batch_size={config.batch_size} must be a positive multiple of "
                         f"devices ({jax.device_count()}) x grad_accum_steps "
                         f"({config.grad_accum_steps})")
    models.check_name(config.model)
    distill.check(config, create_model(config, 2))  # model_kwargs and model keys fit the model
    optim.check_rules(config)
    qat.check(config.quantization)
    augment.from_config(config)  # ops, their arguments and order; config.mixup's keys
    losses.check(config)
    adapt.check(config)
    adversarial.check(config)
    if config.adversarial.method != "none" and (distill.enabled(config) or adapt.enabled(config)):
        raise ValueError(f"config.adversarial.method={config.adversarial.method!r} trains on "
                         f"attacked images alone: it does not combine with config.distill or "
                         f"config.domain_adaptation")
    monitor.check(config)
    if config.schedule == "piecewise_linear":
        optim.check_schedule_points(config.schedule_points)
    if config.lookahead_every < 0 or not 0.0 <= config.lookahead_decay <= 1.0:
        raise ValueError(f"config.lookahead_every={config.lookahead_every} must be >= 0 and "
                         f"config.lookahead_decay={config.lookahead_decay} in [0, 1]")
    tta.parse(config.eval_tta, config.crop_frac)
    if config.whiten_init:
        whitening_target(config, jax.eval_shape(lambda: create_model(config, 2).init(
            jax.random.key(0), jnp.zeros((1, config.image_size, config.image_size, 3))))
            ["params"])
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"config.ema_decay={config.ema_decay} must be in [0, 1)")
    if config.layer_decay <= 0:
        raise ValueError(f"config.layer_decay={config.layer_decay} must be positive (1: off)")
    layouts = ("auto", "jaxcls", *weights.layouts.LAYOUTS)
    if config.init_layout not in layouts:
        raise ValueError(f"config.init_layout={config.init_layout!r}: use one of {layouts}")
    if config.init_from and not os.path.exists(config.init_from):
        raise FileNotFoundError(f"config.init_from={config.init_from!r} does not exist")
    if config.init_head not in ("", "zeroshot"):
        raise ValueError(f"config.init_head={config.init_head!r}: use '' or zeroshot")
    if (config.init_head or config.wise_ft_alphas) and not config.init_from:
        raise ValueError("config.init_head and config.wise_ft_alphas start from "
                         "config.init_from: set it (CLIP weights for init_head=zeroshot)")
    if not all(0.0 <= a <= 1.0 for a in config.wise_ft_alphas):
        raise ValueError(f"config.wise_ft_alphas={config.wise_ft_alphas}: each in [0, 1]")
    if not 0.0 <= config.val_fraction < 1.0:
        raise ValueError(f"config.val_fraction={config.val_fraction} must be in [0, 1)")
    if config.num_steps is None and config.num_epochs is None:
        raise ValueError("set config.num_epochs or config.num_steps")
    sharding.rules(config.sharding)
    sharding.mesh_shape(config.mesh, jax.device_count())
    for key in ("image_size", "log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        if config[key] <= 0:
            raise ValueError(f"config.{key}={config[key]} must be positive")


def eval_rows(metrics_path: str) -> list[dict]:
    """The eval lines logged so far: a resumed run keeps counting from them."""
    if not os.path.exists(metrics_path):
        return []
    with open(metrics_path) as f:
        return [row for line in f if (row := json.loads(line)).get("split") == "eval"]


def best_metric(config: ml_collections.ConfigDict) -> str:
    """The eval metric that picks the run's best checkpoint: the one early stopping monitors
    (e.g. mAP, loss), else accuracy."""
    return config.get("early_stopping_metric") or "accuracy"


def best_eval(rows: list[dict], metric: str = "accuracy") -> tuple[float | None, int | None]:
    """Best value of eval `metric` (loss: lowest; others: highest; the earliest of ties) and its
    step among `eval_rows`: a resumed run keeps counting from it; `jaxcls.evaluate` picks the
    best checkpoint by it."""
    best = (None, None)
    sign = 1.0 if monitor.higher_is_better(metric) else -1.0
    for row in rows:
        if metric in row and (best[0] is None or sign * row[metric] > sign * best[0]):
            best = (row[metric], row["step"])
    return best


def _plateau_scale(config: ml_collections.ConfigDict, evals: list[dict]) -> float:
    """The learning-rate multiplier that schedule='plateau' has reached after these evals."""
    metric = config.plateau_metric
    min_scale = config.plateau_min_learning_rate / config.learning_rate if \
        config.learning_rate else 0.0
    return monitor.plateau_scale([r[metric] for r in evals], monitor.higher_is_better(metric),
                                 config.plateau_patience, config.plateau_factor,
                                 config.plateau_min_delta, min_scale)


def _early_stop_reason(config: ml_collections.ConfigDict, evals: list[dict]) -> str | None:
    """Why training stops early after these evals, or None to go on."""
    metric = config.early_stopping_metric
    if not metric or not evals:
        return None
    values = [r[metric] for r in evals]
    higher = monitor.higher_is_better(metric)
    waited = monitor.evals_since_best(values, higher, config.early_stopping_min_delta)
    if waited < config.early_stopping_patience:
        return None
    best = evals[-1 - waited]
    return (f"early stopping: eval {metric} has not improved by more than "
            f"{config.early_stopping_min_delta} for {waited} evaluations (best {best[metric]:.4g} "
            f"at step {best['step']})")


def check_run_shape(config: ml_collections.ConfigDict, num_train: int, num_classes: int,
                    total_steps: int, steps_per_epoch: int) -> list[str]:
    """Warnings about a run that will not do what its config suggests (logged at start);
    raises ValueError for an early-stopping or plateau metric the run will not log."""
    for key in ("early_stopping_metric", "plateau_metric"):
        if (config[key] == "top5" and num_classes < metrics.TOP5_MIN_CLASSES
                and (key == "early_stopping_metric" or config.schedule == "plateau")):
            raise ValueError(f"config.{key}='top5': with {num_classes} classes top-5 is not "
                             f"logged (it needs at least {metrics.TOP5_MIN_CLASSES})")
    warnings = []
    if config.batch_size > num_train:
        warnings.append(f"config.batch_size={config.batch_size} exceeds the {num_train} training "
                        f"examples: every step repeats examples (an epoch is 1 step)")
    warmup = optim.resolve_steps(config, "warmup", steps_per_epoch) or 0
    if warmup > total_steps:
        warnings.append(f"the warm-up ({warmup} steps) is longer than the run ({total_steps} "
                        f"steps): the learning rate rises for the whole run, reaching "
                        f"config.learning_rate={config.learning_rate} only at the last step, "
                        f"and never decays")
    return warnings


def resolve_class_weights(config: ml_collections.ConfigDict, dataset: sources.Dataset
                          ) -> ml_collections.ConfigDict:
    """`config` with class_weights='balanced' replaced by the numbers from the training labels
    (so config.json records the weights used), after checking one weight per class."""
    if not config.class_weights:
        return config
    config = config.copy_and_resolve_references()
    config.class_weights = losses.resolve_class_weights(
        config, getattr(dataset.train, "labels", None), dataset.num_classes)
    logging.info("class weights %s", config.class_weights)
    return config


# Top-level config keys that set the model field of the same name when changed from their
# default; a family without that field (e.g. remat on a ResNet) fails naming the key.
MODEL_KEYS = ("dropout_rate", "drop_path_rate", "head_dropout_rate", "remat", "attention")


def create_model(config: ml_collections.ConfigDict, num_classes: int):
    """The registered `config.model` with model_kwargs and the top-level model keys applied."""
    model = models.create(config.model, num_classes, dtype=jnp.dtype(config.dtype),
                          **config.model_kwargs)
    base = defaults.get_config()
    fields = {}
    for key in MODEL_KEYS:
        if config[key] != base[key] and key not in config.model_kwargs:
            if not hasattr(model, key):
                raise ValueError(f"config.{key}={config[key]!r} does not apply to "
                                 f"{config.model!r}")
            fields[key] = config[key] or None  # attention "" -> None: XLA chooses
    if (distill.enabled(config) and config.distill.loss == "deit"
            and hasattr(model, "distillation_output")):  # (else distill.check names the key)
        fields["distillation_output"] = True  # train=True: both heads' logits (eval: their mean)
    return model.clone(**fields)


def create_model_and_optimizer(config: ml_collections.ConfigDict, num_classes: int,
                               steps_per_epoch: int, total_steps: int):
    """(model, learning-rate schedule, optax optimizer) for `config`."""
    model = create_model(config, num_classes)
    size = config.image_size
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                               train=False))["params"]
    if adapt.enabled(config):  # the domain classifier trains beside the model
        params = {**params, **jax.eval_shape(
            lambda: adapt.init_params(config, jax.random.key(0), params))}
    schedule = optim.create_schedule(config, steps_per_epoch, total_steps)
    return model, schedule, optim.create_optimizer(config, schedule, params, steps_per_epoch)


def apply_pretrained_conventions(config: ml_collections.ConfigDict, ckpt: weights.Checkpoint
                                 ) -> ml_collections.ConfigDict:
    """`config` with the model fields the weights fix (unless set in model_kwargs) and, with
    init_preprocessing, the weights' mean/std/crop_frac."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        for k, v in ckpt.model_kwargs.items():
            if k not in config.model_kwargs:
                config.model_kwargs[k] = v
        if config.init_preprocessing:
            for k in ("mean", "std", "crop_frac"):
                if k in ckpt.preprocessing and ckpt.preprocessing[k] != config[k]:
                    logging.info("config.%s=%s from the pretrained weights (was %s)", k,
                                 ckpt.preprocessing[k], config[k])
                    config[k] = type(config[k])(ckpt.preprocessing[k])
    return config


def wise_ft(start, end, alpha: float):
    """WiSE-FT (Wortsman et al. 2022): the params (1 - alpha) * start + alpha * end."""
    return jax.tree.map(lambda a, b: ((1 - alpha) * a + alpha * b).astype(b.dtype), start, end)


def seed_rngs(seed: int) -> tuple[jax.Array, jax.Array]:
    """(parameter init rng, train-step rng) of a run; augviz draws its views from the second."""
    init_rng, step_rng = jax.random.split(jax.random.key(seed))
    return init_rng, step_rng


def state_initializer(config: ml_collections.ConfigDict, model, tx):
    """init(rng, variables=None) -> TrainState for this config (image size, EMA, lookahead)."""
    extra = (functools.partial(adapt.init_params, config) if adapt.enabled(config) else None)
    return functools.partial(steps.init_state, model, tx, image_size=config.image_size,
                             ema=config.ema_decay > 0, lookahead=config.lookahead_every > 0,
                             extra_params=extra)


def whitening_target(config: ml_collections.ConfigDict, params) -> tuple[tuple[str, ...], int]:
    """(path, patch size k) of config.whiten_init in `params`, checked to be a k x k conv
    kernel of 3 input channels and 2 x 3 k^2 filters (`whitening.whitening_kernel`'s shape)."""
    path = tuple(config.whiten_init.split("/"))
    leaf = params
    for key in path:
        if not isinstance(leaf, dict) or key not in leaf:
            raise ValueError(f"config.whiten_init={config.whiten_init!r} is not a parameter of "
                             f"{config.model!r}")
        leaf = leaf[key]
    k = leaf.shape[0]
    if leaf.shape != (k, k, 3, 6 * k * k):
        raise ValueError(f"config.whiten_init={config.whiten_init!r} has shape {leaf.shape}; a "
                         f"whitening kernel of k x k patches is (k, k, 3, 6 k^2)")
    return path, k


def whitened_params(config: ml_collections.ConfigDict, params, source):
    """`params` with config.whiten_init's kernel set from the patches of a seeded sample of
    config.whiten_init_images training images, normalised as the model sees them."""
    path, k = whitening_target(config, params)
    rng = np.random.default_rng(config.seed)
    n = min(config.whiten_init_images, len(source))
    idx = np.sort(rng.choice(len(source), n, replace=False))
    images = (source.images[idx] if hasattr(source, "images")  # decoded in memory
              else np.stack([source[int(i)]["image"] for i in idx]))
    x = np.asarray(augment.normalize(images, config.mean, config.std))
    kernel = whitening.whitening_kernel(x, k, config.whiten_init_eps)

    def replace(tree, keys):
        if not keys:
            return jax.device_put(kernel, tree.sharding)
        return {**tree, keys[0]: replace(tree[keys[0]], keys[1:])}

    return replace(params, path)


def augment_context(batch: dict, step: int, global_batch: int, num_train: int) -> dict:
    """This process's rows' training-set index and epoch (int32) for augment ops that need
    them: row r of global batch `step` is position step x global_batch + r of the endless
    stream of shuffled epochs (`loader.train_iterator`)."""
    first = step * global_batch + jax.process_index() * len(batch["index"])
    position = first + np.arange(len(batch["index"]), dtype=np.int64)
    return {"index": np.asarray(batch["index"], np.int32),
            "epoch": (position // num_train).astype(np.int32)}


def compile_steps(config: ml_collections.ConfigDict, model, tx, mesh, abstract_state,
                  total_steps: int | None = None, teacher: distill.Teacher | None = None,
                  teacher_variables=None):
    """(state shardings, jitted train_step, jitted eval_step) on `mesh`; the state is donated.
    `total_steps` is the run's length (lookahead's schedule needs it). With a `teacher`, both
    steps take `teacher_variables` (placed already) as their last argument."""
    state_sharding = sharding.tree_shardings(mesh, abstract_state,
                                             sharding.rules(config.sharding),
                                             config.fsdp_min_size)
    batch_sharding, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    extra = () if teacher is None else (jax.tree.map(lambda x: x.sharding, teacher_variables),)
    train_step = jax.jit(steps.make_train_step(model, tx, config, total_steps, teacher),
                         in_shardings=(state_sharding, batch_sharding, replicated, *extra),
                         out_shardings=(state_sharding, replicated), donate_argnums=0)
    eval_step = jax.jit(steps.make_eval_step(model, config, teacher),
                        in_shardings=(state_sharding, batch_sharding, *extra),
                        out_shardings=replicated)
    return state_sharding, train_step, eval_step


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the summary."""
    validate(config)
    t_start = time.perf_counter()
    pretrained = None
    if config.init_from:
        pretrained = weights.read(config.init_from, config.model, config.init_layout)
        config = apply_pretrained_conventions(config, pretrained)
    os.makedirs(workdir, exist_ok=True)

    # ---- data ------------------------------------------------------------------------------
    dataset = sources.create(config)
    config = resolve_class_weights(config, dataset)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    if jax.process_index() == 0:  # for prediction without the dataset at hand
        with open(os.path.join(workdir, "class_names.json"), "w") as f:
            json.dump(dataset.class_names, f)
    steps_per_epoch = max(len(dataset.train) // config.batch_size, 1)
    total_steps = optim.resolve_steps(config, "num", steps_per_epoch)
    eval_every = optim.resolve_steps(config, "eval_every", steps_per_epoch)
    logging.info("dataset %s: %d train / %d eval examples, %d classes; %d steps of %d "
                 "(%d steps per epoch)", config.dataset, len(dataset.train), len(dataset.eval),
                 dataset.num_classes, total_steps, config.batch_size, steps_per_epoch)
    for warning in check_run_shape(config, len(dataset.train), dataset.num_classes, total_steps,
                                   steps_per_epoch):
        logging.warning("%s", warning)
    skipped = {name: None for name in dataset.skipped}  # ordered set of unreadable files

    def note_unreadable(batch: dict, source) -> None:
        if batch["bad"].any():  # only streaming sources yield bad examples; cached ones drop them
            for i in batch["index"][batch["bad"]]:
                name = source.name(int(i))
                if name not in skipped:
                    skipped[name] = None
                    logging.warning("skipping unreadable image %s", name)

    # ---- mesh, model, optimizer, state ------------------------------------------------------
    mesh = sharding.make_mesh(config.mesh)
    batch_sharding = sharding.batch_sharding(mesh)
    model, schedule, tx = create_model_and_optimizer(config, dataset.num_classes,
                                                     steps_per_epoch, total_steps)
    model = qat.training_model(model, config.quantization)
    init_rng, step_rng = seed_rngs(config.seed)
    init = state_initializer(config, model, tx)
    abstract_state = jax.eval_shape(init, init_rng)
    teacher, teacher_args = None, ()  # knowledge distillation: the frozen teacher's variables
    if distill.enabled(config):
        teacher, teacher_variables = distill.load(config, dataset.num_classes, mesh)
        teacher_args = (teacher_variables,)
    state_sharding, train_step, eval_step = compile_steps(config, model, tx, mesh,
                                                          abstract_state, total_steps,
                                                          teacher, *teacher_args)
    num_params = sum(x.size for x in jax.tree.leaves(abstract_state.params))
    logging.info("model %s: %s parameters on %d device(s); train state %.1f MiB per device "
                 "(%s)", config.model, f"{num_params:,}", jax.device_count(),
                 sharding.bytes_per_device(abstract_state, state_sharding) / 2**20,
                 config.sharding)
    for line in optim.describe_freezing(config, abstract_state.params, steps_per_epoch):
        logging.info("%s", line)

    train_iter = loader.train_iterator(dataset.train, config.batch_size // jax.process_count(),
                                       config.seed, config.num_workers, config.num_threads,
                                       random_crop=augment.from_config(config).host_crop,
                                       class_balanced=config.class_balanced_sampler)
    target, target_iter = None, None  # domain adaptation: target batches beside the source's
    if adapt.enabled(config):
        target = sources.create(adapt.target_config(config))
        target_iter = loader.train_iterator(target.train,
                                            config.batch_size // jax.process_count(),
                                            config.seed + 1, config.num_workers,
                                            config.num_threads,
                                            random_crop=augment.from_config(config).host_crop)
        logging.info("domain adaptation: %d target images from %s", len(target.train),
                     config.domain_adaptation.target)
    # With the source's classes, the target's held-out labels are evaluated too (eval_target).
    target_eval = (target.eval if target is not None
                   and target.class_names == dataset.class_names else None)
    ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints, best_metric(config),
                                   monitor.higher_is_better(best_metric(config)))

    def initial_variables() -> dict:
        """The pretrained variables on the devices: their head new, or zero-shot. Only a new
        head is initialised afresh (XLA prunes the rest of init), so the parameters are never
        on the devices twice."""
        def model_part(tree):  # the weights' share of the state (DANN's classifier: fresh)
            return {"params": {k: v for k, v in tree.params.items() if k != adapt.PARAMS_KEY},
                    "batch_stats": tree.batch_stats}

        variables = weights.fit(
            pretrained, model_part(abstract_state),
            new_head=lambda: jax.jit(lambda r: weights.heads(init(r).params))(init_rng),
            replace_head=config.init_new_head)
        if config.init_head == "zeroshot":
            from jaxcls.clip import zeroshot  # the text tower and tokenizer only here

            variables["params"]["head"] = zeroshot.head(
                config.init_from, dataset.class_names, config.zeroshot_templates,
                config.zeroshot_classes or None, config.model_kwargs.get("quick_gelu"))
            logging.info("head: CLIP's zero-shot classifier (%s templates)",
                         config.zeroshot_templates)
        shardings = model_part(state_sharding)
        return sharding.put(variables, {k: shardings[k] for k in variables})

    start_step = ckpt.latest_step() or 0
    if teacher is not None:
        distill.check_same_teacher(workdir, teacher, *teacher_args, resuming=start_step > 0)
    # WiSE-FT interpolates from the initial params, kept on the devices (rebuilt on resume).
    start = (initial_variables() if pretrained and (not start_step or config.wise_ft_alphas)
             else None)
    wise_ft_start = start["params"] if config.wise_ft_alphas else None
    if start_step:
        state = ckpt.restore(start_step, checkpoint.abstract(abstract_state, state_sharding),
                             train_iter, target_iter)
        logging.info("resumed from %s", ckpt.path(start_step))
    elif pretrained:
        state = jax.jit(lambda v: init(init_rng, variables=v), out_shardings=state_sharding)(
            start)
        start = None  # the state holds its own copy; wise_ft_start keeps the initial params
        logging.info("initialised from %s (%s layout)", config.init_from, pretrained.layout)
    else:
        state = jax.jit(init, out_shardings=state_sharding)(init_rng)
        if config.whiten_init:
            variables = {"params": whitened_params(config, state.params, dataset.train),
                         "batch_stats": state.batch_stats}
            state = jax.jit(lambda v: init(init_rng, variables=v),
                            out_shardings=state_sharding)(variables)
            logging.info("%s set from the patch statistics of %d training images",
                         config.whiten_init, min(config.whiten_init_images, len(dataset.train)))

    stop = preemption.StopRequest(check_every=config.log_every_steps,
                                  timeout_s=config.stop_timeout_s,
                                  checkpoint_dir=os.path.join(workdir, "checkpoints"))

    def evaluate(state, source=dataset.eval) -> metrics.Metrics:
        batches = loader.eval_batches(source, config.batch_size, config.num_threads)
        outputs = []
        for batch in batches:
            note_unreadable(batch, source)
            outputs.append(eval_step(state, loader.to_global(batch, batch_sharding),
                                     *teacher_args))
            stop.beat()
        if not outputs:
            raise ValueError(f"the eval split of {config.dataset!r} is empty")
        return metrics.merge_on_host(outputs)

    # ---- loop --------------------------------------------------------------------------------
    needs_context = augment.needs_context(augment.from_config(config))
    writer = writers.MetricWriter(workdir, start_step)
    evals = eval_rows(os.path.join(workdir, "metrics.jsonl"))
    best_value, best_step = best_eval(evals, best_metric(config))
    threshold_fits = {}  # multilabel: step -> thresholds.save's inputs, for the best and last
    lr_scale = optim.plateau_scale(state.opt_state)  # schedule='plateau' cuts so far, else 1
    early_stop = _early_stop_reason(config, evals)  # a run that stopped early stays stopped
    if early_stop:
        logging.info("%s; not training further", early_stop)
    pending = []  # per-step train metrics since the last log point, still on device
    interval_ms = []  # ms per step of each log interval (eval and checkpoint time excluded)
    t_interval, step_interval = time.perf_counter(), start_step
    last_eval = last_eval_ema = last_eval_target = None
    last_eval_wise_ft = {}  # alpha -> the last eval of the interpolated params

    def log_train(step: int) -> None:
        """Host sync point: reduce pending metrics, stop on NaN/inf, print and write them."""
        nonlocal t_interval, step_interval
        values = metrics.to_host(metrics.merge_on_host(pending))
        pending.clear()
        if not (np.isfinite(values["loss"]) and np.isfinite(values["grad_norm"])):
            ckpt.wait()
            last = ckpt.latest_step()
            raise FloatingPointError(
                f"train loss {values['loss']}, gradient norm {values['grad_norm']} by step "
                f"{step}; stopping without saving. Last "
                f"good checkpoint: {ckpt.path(last) if last else 'none'}. Lower "
                f"config.learning_rate or set config.grad_clip_norm.")
        now = time.perf_counter()
        ms = 1e3 * (now - t_interval) / max(step - step_interval, 1)
        if step_interval > start_step:  # the first interval holds compilation
            interval_ms.append(ms)
        t_interval, step_interval = now, step
        values["learning_rate"] = float(schedule(step)) * lr_scale
        values["img_per_s"] = config.batch_size * 1e3 / ms
        writer.write(step, "train", values)
        logging.info(writers.progress_line(step, total_steps, step / steps_per_epoch, values,
                                           values["learning_rate"], values["img_per_s"],
                                           (total_steps - step) * ms / 1e3))

    def threshold_inputs(state, collected) -> tuple:
        """thresholds.save's (fit, evaluated, fitted_on) for this eval: fitted on the val
        hold-out when there is one (then the eval F1 at them is out of sample), else on the
        eval split itself."""
        fit = evaluate(state, dataset.val).mAP if dataset.val is not None else collected.mAP
        return (fit.arrays(), collected.mAP.arrays(),
                "val" if dataset.val is not None else "eval")

    def save(step: int, eval_metrics: dict | None = None) -> None:
        nonlocal t_interval
        ckpt.save(step, state, train_iter, eval_metrics, target_iter)
        t_interval = time.perf_counter()

    collected = None  # the last eval's metrics, scores included for multilabel
    try:
        for step in range(start_step, start_step if early_stop else total_steps):
            batch = next(train_iter)
            note_unreadable(batch, dataset.train)
            global_batch = loader.to_global(batch, batch_sharding)
            if needs_context:
                context = augment_context(batch, step, config.batch_size, len(dataset.train))
                global_batch.update({k: jax.make_array_from_process_local_data(batch_sharding, v)
                                     for k, v in context.items()})
            if target is not None:
                target_batch = next(target_iter)
                note_unreadable(target_batch, target.train)
                target_global = loader.to_global(target_batch, batch_sharding)
                global_batch.update(target_image=target_global["image"],
                                    target_mask=target_global["mask"])
            state, m = train_step(state, global_batch, step_rng, *teacher_args)
            pending.append(m)
            done = step + 1
            stopping = stop.reached(done, m)  # the same step on every process
            is_eval = ((eval_every and done % eval_every == 0)
                       or (done == total_steps and config.final_eval))
            is_save = (is_eval or done % config.checkpoint_every_steps == 0
                       or done == total_steps or stopping)
            if done % config.log_every_steps == 0 or is_save:
                log_train(done)
            if is_eval:
                collected = evaluate(state)
                last_eval = metrics.to_host(collected)
                writer.write(done, "eval", last_eval)
                logging.info("eval at step %d: %s", done,
                             " ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
                evals.append({"step": done, **last_eval})
                best_value, best_step = best_eval(evals, best_metric(config))
                if config.task == "multilabel":
                    threshold_fits = {k: v for k, v in threshold_fits.items() if k == best_step}
                    threshold_fits[done] = threshold_inputs(state, collected)
                scale = _plateau_scale(config, evals) if config.schedule == "plateau" else 1.0
                if not np.isclose(scale, lr_scale, rtol=1e-6):  # (lr_scale was read as float32)
                    lr_scale = scale
                    logging.info("eval %s stalled: learning rate x%.3g from step %d",
                                 config.plateau_metric, lr_scale, done + 1)
                    state = state.replace(opt_state=optim.set_plateau_scale(state.opt_state,
                                                                            lr_scale))
                early_stop = _early_stop_reason(config, evals)
                if target_eval is not None:
                    last_eval_target = metrics.to_host(evaluate(state, target_eval))
                    writer.write(done, "eval_target", last_eval_target)
                    logging.info("eval on the target domain at step %d: %s", done,
                                 " ".join(f"{k} {v:.4f}" for k, v in last_eval_target.items()))
                if config.ema_decay > 0:
                    ema_state = state.replace(params=state.ema_params)
                    last_eval_ema = metrics.to_host(evaluate(ema_state))
                    writer.write(done, "eval_ema", last_eval_ema)
                    logging.info("eval of the EMA params at step %d: %s", done,
                                 " ".join(f"{k} {v:.4f}" for k, v in last_eval_ema.items()))
                for alpha in config.wise_ft_alphas:
                    mixed = state.replace(params=wise_ft(wise_ft_start, state.params, alpha))
                    last_eval_wise_ft[alpha] = metrics.to_host(evaluate(mixed))
                    writer.write(done, f"eval_wise_ft_{alpha:g}", last_eval_wise_ft[alpha])
                    logging.info("eval of WiSE-FT alpha=%g at step %d: %s", alpha, done,
                                 " ".join(f"{k} {v:.4f}" for k, v in
                                          last_eval_wise_ft[alpha].items()))
            if is_save:
                save(done, last_eval if is_eval else None)
            if stopping:
                logging.warning("%s received: saved step %d, exiting; rerun the same command to "
                                "resume", stop.signal, done)
                break
            if early_stop:
                logging.info("%s: saved step %d, stopping", early_stop, done)
                break
    finally:
        stop.restore()
    ckpt.wait()
    ckpt.close()
    writer.close()
    for step_done, (fit, evaluated, fit_on) in sorted(threshold_fits.items()):
        # Into the best and the last checkpoint, whichever evaluate/predict load.
        if jax.process_index() == 0 and os.path.isdir(ckpt.path(step_done)):
            path = thresholds.save(ckpt.path(step_done), fit, evaluated, dataset.class_names,
                                   fit_on)
            logging.info("per-label thresholds (max F1 on the %s split) in %s", fit_on, path)
    if (config.task == "multilabel" and best_step and best_step not in threshold_fits
            and not os.path.exists(os.path.join(ckpt.path(best_step), thresholds.FILENAME))):
        logging.warning("no thresholds for the best checkpoint (step %d, evaluated before this "
                        "run resumed): only checkpoints evaluated in this run get them",
                        best_step)
    summary = {
        "steps": int(state.step),
        "total_steps": total_steps,
        "stopped_by": stop.signal or ("early_stopping" if early_stop else None),
        "stop_reason": early_stop,
        "final_eval": last_eval,
        "final_eval_ema": last_eval_ema,
        "final_eval_wise_ft": {f"{a:g}": v for a, v in last_eval_wise_ft.items()} or None,
        "final_eval_target": last_eval_target,
        "best_metric": best_metric(config),
        "best_value": best_value,
        "best_accuracy": next((r["accuracy"] for r in evals if r["step"] == best_step), None),
        "best_step": best_step,
        "best_checkpoint": ckpt.path(best_step) if best_step else None,
        "skipped_files": len(skipped),
        "loop_step_ms": float(np.median(interval_ms)) if interval_ms else None,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    logging.info("summary: best eval %s %s at step %s (%s); %d unreadable file(s) "
                 "skipped; %.0f s wall", best_metric(config), best_value, best_step,
                 summary["best_checkpoint"], len(skipped), summary["wall_s"])
    return summary
