"""Training augmentation from a config string, applied inside the jitted train step.

    config.augment = "random_resized_crop(224)|flip|randaugment(2, 9, 0.5)|erasing(0.25)"
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0)

`config.augment` is an ordered list of ops separated by `|`, each a Python call with literal
arguments (positional or keyword; `flip` alone means `flip()`; arithmetic like `1/3` is
allowed), looked up in `augment_ops.OPS`. The ops run in three stages, in string order within
each:

1. `random_resized_crop(...)`, only first: done by the host loader at decode time
   (`Pipeline.host_crop`);
2. image ops (crop, flips (`flip_alternate`: airbench's flip schedule over epochs), rotate,
   affine, elastic, color_jitter, grayscale, noise, blur, corrupt (an ImageNet-C corruption:
   `corrupt("fog", 3)`), randaugment, trivialaugment, autoaugment, augmix) on each image in
   [0, 255], then normalisation with config.mean / config.std;
3. `erasing` / `cutout`, only last: on the normalised image, as timm erases.

Then mixup / CutMix (config.mixup, `mixup.py`) mix pairs of examples and their targets (the
loss applies label smoothing to the mixed targets). `apply` does all of it for one batch, with an
independent draw per example; the train step and `python -m jaxcls.augviz` both call it.
"""

import ast
import dataclasses
import inspect
import operator
import types
import typing
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jaxcls import defaults
from jaxcls.data import mixup as mixup_lib
from jaxcls.data.augment_ops import OPS

HostCrop = tuple[tuple[float, float], tuple[float, float]]  # (scale, ratio)


@dataclasses.dataclass(frozen=True)
class Op:
    """One parsed op: its registered name and all its arguments (defaults filled in)."""
    name: str
    args: dict

    def __str__(self) -> str:
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Everything `apply` needs, built once from the config (`from_config`)."""
    ops: tuple[Op, ...]  # as parsed, the host crop included
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mixup: mixup_lib.Mixup = mixup_lib.Mixup()

    @property
    def host_crop(self) -> HostCrop | None:
        """(scale, ratio) of the leading random_resized_crop, for the host loader; or None."""
        first = self.ops[0] if self.ops else None
        if first is None or first.name != "random_resized_crop":
            return None
        return first.args["scale"], first.args["ratio"]


# ---- parsing -----------------------------------------------------------------------------------

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
               ast.Div: operator.truediv}


def _literal(node: ast.AST):
    """A literal argument: numbers, strings, True/False/None, tuples/lists of them, and
    arithmetic on numbers (`1/3`, `-0.5`)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        a, b = _literal(node.left), _literal(node.right)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
            return _ARITHMETIC[type(node.op)](a, b)
    raise ValueError(f"{ast.unparse(node)!r} is not a literal")


def _coerce(value, annotation):
    """`value` as the annotated type (ints accepted for floats), or TypeError."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        for alternative in args:
            try:
                return _coerce(value, alternative)
            except TypeError:
                pass
    elif origin is typing.Literal:
        if value in args:
            return value
    elif origin is tuple:
        if isinstance(value, tuple) and len(value) == len(args):
            return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    elif annotation is type(None):
        if value is None:
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, annotation):
        return value
    raise TypeError


def _type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _signature(name: str) -> str:
    signature = inspect.signature(OPS[name].builder).replace(
        return_annotation=inspect.Signature.empty)
    return f"{name}{signature}".replace("typing.", "")


def _parse_op(text: str) -> Op:
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        node = None
    if isinstance(node, ast.Name):
        node = ast.Call(func=node, args=[], keywords=[])
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        raise ValueError(f"augment op {text!r} is not of the form name or name(arg, key=value)")
    name = node.func.id
    if name not in OPS:
        raise ValueError(f"unknown augment op {name!r} in {text!r}; valid ops: "
                         f"{', '.join(OPS)}")
    try:
        if any(k.arg is None for k in node.keywords):
            raise ValueError("**kwargs are not supported")
        args = [_literal(a) for a in node.args]
        kwargs = {k.arg: _literal(k.value) for k in node.keywords}
        signature = inspect.signature(OPS[name].builder)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ValueError(str(e)) from None
        bound.apply_defaults()
        values = {}
        for key, value in bound.arguments.items():
            annotation = signature.parameters[key].annotation
            try:
                values[key] = _coerce(value, annotation)
            except TypeError:
                raise ValueError(f"{key}={value!r} is not {_type_name(annotation)}") from None
        OPS[name].builder(**values)  # checks the values' ranges
    except ValueError as e:
        raise ValueError(f"augment op {text!r}: {e}; signature: {_signature(name)}") from None
    return Op(name, values)


def parse(spec: str, image_size: int | None = None) -> tuple[Op, ...]:
    """The ops of an augmentation string, checked: names, arguments and stage order.

    `image_size`, if given, must equal random_resized_crop's `size` where that is set.
    """
    if not spec.strip():
        return ()
    ops = tuple(_parse_op(text.strip()) for text in spec.split("|"))
    stages = [OPS[op.name].stage for op in ops]
    for i, (op, stage) in enumerate(zip(ops, stages, strict=True)):
        if stage == "host" and i > 0:
            raise ValueError(f"augment op {op.name!r} is done by the host loader at decode "
                             f"time, so it must come first in {spec!r}")
        if stage == "image" and "normalized" in stages[:i]:
            first = ops[stages.index("normalized")]
            raise ValueError(f"augment op {first.name!r} works on the normalised image, after "
                             f"every image op: put it after {op.name!r}, at the end of "
                             f"{spec!r}")
        kernel = op.args.get("kernel_size")
        if kernel is not None and image_size is not None and kernel // 2 >= image_size:
            raise ValueError(f"augment op {op.name!r}: kernel_size={kernel} is too large for "
                             f"{image_size}-pixel images (at most {2 * image_size - 1})")
        if op.name == "random_resized_crop" and op.args["size"] not in (None, image_size):
            raise ValueError(f"augment op {str(op)!r}: size must equal config.image_size "
                             f"({image_size}) or be left out")
    return ops


def to_string(ops: Sequence[Op]) -> str:
    """The canonical string of parsed ops (every argument by keyword): parses back to `ops`."""
    return "|".join(str(op) for op in ops)


def from_config(config: ml_collections.ConfigDict) -> Pipeline:
    """The pipeline of config.augment, config.mixup and mean/std; fails on a
    bad op, argument or mixup key, naming it."""
    try:
        ops = parse(config.augment, config.image_size)
    except ValueError as e:
        raise ValueError(f"config.augment={config.augment!r}: {e}") from None
    if isinstance(config.mixup, ml_collections.ConfigDict):
        values = config.mixup.to_dict()
    elif isinstance(config.mixup, dict):
        values = dict(config.mixup)
    else:
        raise ValueError(f"config.mixup={config.mixup!r} must be a dict of the keys in "
                         f"jaxcls/defaults.py")
    settings = mixup_lib.settings_from(values, defaults.get_config().mixup.to_dict())
    return Pipeline(ops=ops, mean=tuple(config.mean), std=tuple(config.std), mixup=settings)


# ---- applying ----------------------------------------------------------------------------------

def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float],
              dtype=jnp.float32) -> jax.Array:
    """[0, 255] -> (x / 255 - mean) / std, with mean and std in [0, 1] units."""
    mean = jnp.asarray(mean, jnp.float32) * 255.0
    std = jnp.asarray(std, jnp.float32) * 255.0
    return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def _image_fns(pipeline: Pipeline, stage: str) -> list:
    """[(per-image function, whether it takes the example's context)] of `stage`'s ops."""
    mean_pixel = tuple(round(255.0 * m) for m in pipeline.mean)
    fns = []
    for op in pipeline.ops:
        if OPS[op.name].stage == stage:
            args = dict(op.args)
            if "fill" in args and args["fill"] is None:
                args["fill"] = mean_pixel  # timm fills geometric ops with the mean colour
            fns.append((OPS[op.name].builder(**args), OPS[op.name].context))
    return fns


def _chain(fns: list):
    def per_image(rngs, img, ctx):  # rngs: one key per op
        for i, (fn, takes_context) in enumerate(fns):
            img = fn(rngs[i], img, ctx) if takes_context else fn(rngs[i], img)
        return img

    return per_image


def needs_context(pipeline: Pipeline) -> bool:
    """Whether an op needs each example's training-set index and epoch (`apply`'s context)."""
    return any(OPS[op.name].context for op in pipeline.ops)


def apply(pipeline: Pipeline, rng: jax.Array, images: jax.Array, labels: jax.Array,
          num_classes: int, dtype=jnp.float32, context: dict | None = None
          ) -> tuple[jax.Array, jax.Array]:
    """uint8 images [N, H, W, 3] and labels (int [N], or multi-hot [N, C] for multi-label) ->
    (augmented, normalised images in `dtype`, targets [N, num_classes] float32, mixed by
    mixup/CutMix; the loss applies label smoothing). `context`: {"index": int [N], "epoch":
    int [N]} of the examples, for the ops that need them (`needs_context`); without it, index
    0..N-1 and epoch 0."""
    image_rng, normalized_rng, mix_rng = jax.random.split(rng, 3)
    n = images.shape[0]
    if context is None:
        context = {"index": jnp.arange(n), "epoch": jnp.zeros(n, jnp.int32)}
    x = images.astype(jnp.float32)
    image_fns = _image_fns(pipeline, "image")
    if image_fns:
        x = jax.vmap(_chain(image_fns))(jax.random.split(image_rng, (n, len(image_fns))), x,
                                        context)
    x = normalize(x, pipeline.mean, pipeline.std)
    normalized_fns = _image_fns(pipeline, "normalized")
    if normalized_fns:
        x = jax.vmap(_chain(normalized_fns))(
            jax.random.split(normalized_rng, (n, len(normalized_fns))), x, context)
    targets = (jax.nn.one_hot(labels, num_classes) if labels.ndim == 1
               else labels.astype(jnp.float32))
    x, targets = mixup_lib.mix(mix_rng, x, targets, pipeline.mixup)
    return x.astype(dtype), targets
