"""The quantization schemes: a float model + variables -> an int8 one with the same
`apply(variables, images, train=False) -> logits` contract, and back from disk."""

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

SCHEMES = ("w8", "w8a8", "w8a8_static")
META_FILE = "meta.json"


def check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"--scheme={scheme!r} is unknown; use one of {list(SCHEMES)}")


# ---- w8: weight-only int8 storage ------------------------------------------------------------


def _is_kernel(path, leaf) -> bool:
    return getattr(path[-1], "key", None) in ("kernel", "embedding") and np.ndim(leaf) >= 2


def int8_weights(params: Any) -> Any:
    """Every kernel as {"qvalue": int8, "scale": float32 per output channel (last axis)}:
    symmetric absmax, so qvalue * scale reproduces it within scale / 2."""
    def quantize(path, w):
        if not _is_kernel(path, w):
            return w
        w = jnp.asarray(w, jnp.float32)
        scale = jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True) / 127.0
        scale = jnp.where(scale > 0, scale, 1.0)
        return {"qvalue": jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8),
                "scale": scale}
    return jax.tree_util.tree_map_with_path(quantize, params)


def _is_int8(x) -> bool:
    return isinstance(x, dict) and set(x) == {"qvalue", "scale"}


def float_weights(params: Any) -> Any:
    """int8_weights' inverse (to float32), inside a jitted function: XLA widens on the fly."""
    return jax.tree.map(lambda x: x["qvalue"].astype(jnp.float32) * x["scale"]
                        if _is_int8(x) else x, params, is_leaf=_is_int8)


@dataclasses.dataclass(frozen=True)
class WeightOnlyInt8:
    """A model whose kernels are stored as int8 (`int8_weights`) and computed in float."""

    model: nn.Module

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def apply(self, variables: dict, *args, **kwargs):
        variables = {**variables, "params": float_weights(variables["params"])}
        return self.model.apply(variables, *args, **kwargs)


# ---- w8a8 and w8a8_static through qwix -------------------------------------------------------


def rule_kwargs(scheme: str) -> dict:
    """qwix rule arguments for `scheme`: every module, int8 weights and activations."""
    return {"module_path": ".*", "weight_qtype": jnp.int8, "act_qtype": jnp.int8,
            "act_static_scale": scheme == "w8a8_static"}


def qwix_model(model: nn.Module, scheme: str) -> nn.Module:
    import qwix

    return qwix.quantize_model(model, qwix.PtqProvider([qwix.QuantizationRule(
        **rule_kwargs(scheme))]))


def _calibration_step(model: nn.Module):
    import qwix

    qt = qwix.quantize_model(model, qwix.QtProvider([qwix.QtRule(
        **rule_kwargs("w8a8_static"))]))

    def step(variables, stats, x):
        v = variables if stats is None else {**variables, "quant_stats": stats}
        return qt.apply(v, x, train=False, mutable=["quant_stats"])[1]["quant_stats"]
    return step


def calibrate(model: nn.Module, variables: dict, batches: Iterable[jax.Array]) -> dict:
    """qwix's `quant_stats` (running absmax of every quantized op's input) over `batches` of
    normalised images, for static activation ranges."""
    step = _calibration_step(model)
    stats = None
    for x in batches:  # eagerly: qwix's interception keeps Python state a jit trace leaks
        stats = step(variables, stats, x)
    if stats is None:
        raise ValueError("calibration needs at least one batch of images")
    return stats


def _abstract_qparams(qmodel: nn.Module, image_size: int) -> Any:
    shape = jax.eval_shape(lambda: qmodel.init(jax.random.key(0), jnp.zeros(
        (1, image_size, image_size, 3)), train=False))
    return shape["params"]


def quantize(model: nn.Module, variables: dict, scheme: str, image_size: int,
             calibration_batches: Callable[[], Iterable[jax.Array]] | None = None
             ) -> tuple[Any, dict]:
    """(model, variables) in `scheme`; `calibration_batches()` yields normalised image
    batches (w8a8_static only)."""
    check_scheme(scheme)
    if scheme == "w8":
        return WeightOnlyInt8(model), {**variables, "params": int8_weights(variables["params"])}
    import qwix

    qmodel = qwix_model(model, scheme)
    stats = {}
    if scheme == "w8a8_static":
        if calibration_batches is None:
            raise ValueError("--scheme=w8a8_static needs calibration images")
        stats = calibrate(model, variables, calibration_batches())
    qparams = qwix.quantize_params(variables["params"], _abstract_qparams(qmodel, image_size),
                                   stats)
    return qmodel, {**variables, "params": qparams}


# ---- on disk ---------------------------------------------------------------------------------


def _abstract_variables(model: nn.Module, variables_like: dict, scheme: str,
                        image_size: int) -> Any:
    """The tree structure of `quantize`'s variables for `model` (arrays abstract)."""
    params = variables_like["params"]
    if scheme == "w8":
        qparams = jax.eval_shape(int8_weights, params)
    else:
        import qwix

        abstract = _abstract_qparams(qwix_model(model, scheme), image_size)
        if scheme == "w8a8_static":
            # The activation scales are parameters too; quantize_params needs concrete
            # statistics to make them, so one image's calibration gives the structure.
            stats = _calibration_step(model)(variables_like, None,
                                             jnp.zeros((1, image_size, image_size, 3)))
            qparams = qwix.quantize_params(params, abstract, stats)
        else:
            qparams = jax.eval_shape(lambda p: qwix.quantize_params(p, abstract), params)
    return {**variables_like, "params": qparams}


def save(directory: str, variables: dict, meta: dict) -> None:
    """The quantized variables as leaves.npz (flattened in tree order) and meta.json."""
    os.makedirs(directory, exist_ok=True)
    leaves = jax.tree.leaves(variables)
    np.savez(os.path.join(directory, "leaves.npz"),
             **{f"{i:05d}": np.asarray(x) for i, x in enumerate(leaves)})
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)


def load(directory: str, model: nn.Module, float_variables: dict) -> tuple[Any, dict, dict]:
    """(quantized model, variables, meta) saved by `save`; `float_variables` (the run's)
    give the tree structure."""
    path = os.path.join(directory, META_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: quantize the run first "
                                f"(python -m jaxcls.quantize --workdir=... --scheme=...)")
    with open(path) as f:
        meta = json.load(f)
    scheme = meta["scheme"]
    abstract = _abstract_variables(model, float_variables, scheme, meta["image_size"])
    with np.load(os.path.join(directory, "leaves.npz")) as f:
        leaves = [jnp.asarray(f[k]) for k in sorted(f.files)]
    treedef = jax.tree.structure(abstract)
    if treedef.num_leaves != len(leaves):
        raise ValueError(f"{directory} holds {len(leaves)} arrays, the {scheme} model needs "
                         f"{treedef.num_leaves}: it was quantized from another model")
    variables = jax.tree.unflatten(treedef, leaves)
    qmodel = WeightOnlyInt8(model) if scheme == "w8" else qwix_model(model, scheme)
    return qmodel, variables, meta


def nbytes(variables: dict) -> int:
    """Bytes of the parameters as stored (int8 values count 1 byte)."""
    return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(variables["params"])))


def directory(workdir: str, scheme: str) -> str:
    """Where `python -m jaxcls.quantize` writes the run's `scheme` model."""
    return os.path.join(workdir, "quantized", scheme)
