"""The device mesh and where arrays live on it.

The batch is split over every device (all mesh axes). Where the train state lives is a list of
partition rules, (regex over the array's path, placement) pairs, first match wins:

- data parallel (`config.sharding="dp"`): parameters, their EMA and the optimizer state are
  replicated on every device;
- FSDP (`config.sharding="fsdp"`): each array of at least `config.fsdp_min_size` elements is
  split along its largest axis that the 'data' axis size divides; smaller ones (biases, norm
  scales, BatchNorm statistics) stay replicated. The placement depends only on the shape, so
  optimizer moments and the EMA, whose leaves mirror the parameters, are split like them.
  XLA gathers each weight where a layer needs it and reduce-scatters its gradient.

A mesh with more axes, e.g. `(("replica", 2), ("data", -1))`, splits the state over 'data' only
and replicates it over the others (hybrid sharding: FSDP within a group, data parallel across).
"""

import math
import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

FSDP = "fsdp"  # a rule's placement: split the largest axis divisible by the 'data' axis size

DATA_PARALLEL_RULES = ((".*", P()),)
FSDP_RULES = (("step", P()), (".*", FSDP))
RULES = {"dp": DATA_PARALLEL_RULES, "fsdp": FSDP_RULES}


def rules(name: str) -> tuple:
    """The partition rules of `config.sharding`."""
    if name not in RULES:
        raise ValueError(f"config.sharding={name!r}: use one of {sorted(RULES)}")
    return RULES[name]


def mesh_shape(axes: Sequence[tuple[str, int]], num_devices: int) -> tuple[int, ...]:
    """Sizes of the mesh axes `config.mesh` names, the one -1 taking the remaining devices."""
    names = [a[0] for a in axes]
    if "data" not in names or len(set(names)) != len(names):
        raise ValueError(f"config.mesh={tuple(axes)!r} must name distinct axes, one of them "
                         f"'data'")
    sizes = [int(a[1]) for a in axes]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh={tuple(axes)!r}: sizes are positive, at most one is -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes and num_devices % known == 0:
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"config.mesh={tuple(axes)!r} does not fit the {num_devices} devices")
    return tuple(sizes)


def make_mesh(axes: Sequence[tuple[str, int]] = (("data", -1),)) -> Mesh:
    """The devices of all processes arranged as `axes` ((name, size), ...; see mesh_shape)."""
    names = tuple(a[0] for a in axes)
    # Auto axes: with explicit ones (the default of jax.make_mesh in JAX >= 0.7) a plain
    # data-parallel step fails with "Contracting dimensions are sharded".
    return jax.make_mesh(mesh_shape(axes, jax.device_count()), names,
                         axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device."""
    return NamedSharding(mesh, P(mesh.axis_names))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def path_str(path) -> str:
    """'params/stage1_block1/Conv_0/kernel' for a jax tree path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def fsdp_spec(shape: Sequence[int], axis_size: int, min_size: int) -> P:
    """The largest axis of `shape` that `axis_size` divides, split over 'data' (the last such
    axis on a tie); replicated when the array is smaller than `min_size` or no axis divides."""
    axes = [i for i, d in enumerate(shape) if d % axis_size == 0]
    if math.prod(shape) < min_size or not axes:
        return P()
    i = max(axes, key=lambda i: (shape[i], i))
    return P(*(None,) * i, "data")


def tree_shardings(mesh: Mesh, tree, rules: Sequence[tuple[str, P | str]] = DATA_PARALLEL_RULES,
                   fsdp_min_size: int = 0):
    """NamedSharding for every leaf of `tree` (arrays or ShapeDtypeStructs), from the first
    rule whose regex matches its path."""
    def rule_for(path, leaf):
        name = path_str(path)
        for pattern, spec in rules:
            if re.fullmatch(pattern, name):
                if spec == FSDP:
                    spec = fsdp_spec(leaf.shape, mesh.shape["data"], fsdp_min_size)
                return NamedSharding(mesh, spec)
        raise ValueError(f"no partition rule matches {name!r}")

    return jax.tree_util.tree_map_with_path(rule_for, tree)


def bytes_per_device(tree, shardings) -> int:
    """Bytes of `tree` (arrays or ShapeDtypeStructs) that each device holds under `shardings`."""
    return sum(math.prod(s.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize
               for x, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings), strict=True))


def put(tree, shardings):
    """Host arrays (equal on every process) as global arrays laid out by `shardings`; each
    device receives only its own shard, so a big model is never whole on one device."""
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda index: x[index]),
        tree, shardings)
