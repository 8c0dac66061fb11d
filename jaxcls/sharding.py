"""The device mesh and where arrays live on it.

Data parallel: the batch is split on the 'data' axis, parameters and optimizer state are
replicated. Partition rules are (regex over the parameter path, PartitionSpec) pairs, first
match wins, so FSDP is a different list of rules, not different code.
"""

import re
from collections.abc import Sequence

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_PARALLEL_RULES = ((".*", P()),)


def make_mesh() -> Mesh:
    """All devices of all processes on one 'data' axis."""
    # Auto axes: with explicit ones (the default of jax.make_mesh in JAX >= 0.7) a plain
    # data-parallel step fails with "Contracting dimensions are sharded".
    return jax.make_mesh((jax.device_count(),), ("data",),
                         axis_types=(jax.sharding.AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def path_str(path) -> str:
    """'params/stage1_block1/Conv_0/kernel' for a jax tree path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    for k in path)


def tree_shardings(mesh: Mesh, tree, rules: Sequence[tuple[str, P]] = DATA_PARALLEL_RULES):
    """NamedSharding for every leaf of `tree`, from the first rule whose regex matches its path."""
    def rule_for(path, _):
        name = path_str(path)
        for pattern, spec in rules:
            if re.fullmatch(pattern, name):
                return NamedSharding(mesh, spec)
        raise ValueError(f"no partition rule matches {name!r}")

    return jax.tree_util.tree_map_with_path(rule_for, tree)
