"""FSDP: the placement rule, mesh errors, and an 8-device FSDP run (with a resume) equal to a
data-parallel one step for step, with its parameters and optimizer state really split."""

import json
import os

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxcls import checkpoint, sharding, train
from tests.conftest import run_python, tiny_config


@pytest.mark.parametrize("shape, spec", [
    ((3, 3, 64, 128), P(None, None, None, "data")),  # conv kernel: output channels
    ((768, 12, 64), P("data")),  # attention query [D, H, D/H]: the widest axis
    ((64, 64), P(None, "data")),  # a tie goes to the last axis
    ((100, 96), P(None, "data")),  # 100 is bigger but 8 does not divide it
    ((128,), P()),  # a bias: under the size threshold
    ((1001, 999), P()),  # no axis divisible by 8
])
def test_fsdp_splits_the_largest_divisible_axis(shape, spec):
    assert sharding.fsdp_spec(shape, 8, min_size=1024) == spec


@pytest.mark.parametrize("mesh, error", [
    ((("model", -1),), "one of them 'data'"),
    ((("data", -1), ("data", 1)), "distinct"),
    ((("data", -1), ("replica", -1)), "at most one is -1"),
    ((("data", 3),), "does not fit the 8 devices"),
    ((("replica", 3), ("data", -1)), "does not fit the 8 devices"),
])
def test_bad_meshes_fail_naming_the_key(mesh, error):
    with pytest.raises(ValueError, match=f"config.mesh=.*{error}"):
        sharding.mesh_shape(mesh, 8)
    assert sharding.mesh_shape((("replica", 2), ("data", -1)), 8) == (2, 4)


def test_unknown_sharding_fails_at_validation():
    with pytest.raises(ValueError, match="config.sharding='zero3'"):
        train.validate(tiny_config(sharding="zero3"))


# A one-block ViT, 32 wide, on 8x8 digits (2x2 patches of 4); arrays of 512 or more elements
# are split. AdamW and an EMA: both add state that mirrors the parameters.
VIT = dict(model="vit_ti4", model_kwargs=dict(width=32, depth=1, num_heads=2, mlp_dim=64),
           optimizer="adamw", learning_rate=1e-3, ema_decay=0.9, schedule="constant",
           batch_size=16, fsdp_min_size=512, final_eval=False)

RUN = """
import json
import jax
# The resumed FSDP run compiles the same programs as the first: a persistent cache shares them.
jax.config.update("jax_compilation_cache_dir", CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
from absl import logging
from tests.conftest import tiny_config
from jaxcls import sharding, train, writers
logging.set_verbosity(logging.INFO)
writers.quiet_libraries()
vit = json.loads(VIT)
dp, fsdp = WORKDIRS
train.run(tiny_config(**vit, sharding="dp", num_steps=4), dp)
train.run(tiny_config(**vit, sharding="fsdp", num_steps=2), fsdp)
train.run(tiny_config(**vit, sharding="fsdp", num_steps=4), fsdp)  # resumes at step 2

# The state as train.run creates it, leaf by leaf: path, shape, shard shape, spec.
config = tiny_config(**vit, sharding="fsdp")
mesh = sharding.make_mesh(config.mesh)
model, _, tx = train.create_model_and_optimizer(config, 10, 10, 4)
init = train.state_initializer(config, model, tx)
abstract = jax.eval_shape(init, jax.random.key(0))
shardings, _, _ = train.compile_steps(config, model, tx, mesh, abstract)
state = jax.jit(init, out_shardings=shardings)(jax.random.key(0))
leaves = {sharding.path_str(p): [x.shape, x.addressable_shards[0].data.shape, str(x.sharding.spec)]
          for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}
print("LEAVES " + json.dumps(leaves))
"""


def _rows(workdir, split):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


@pytest.mark.slow
def test_fsdp_equals_data_parallel_on_eight_devices(tmp_path):
    dp, fsdp = str(tmp_path / "dp"), str(tmp_path / "fsdp")
    code = (RUN.replace("VIT", repr(json.dumps(VIT))).replace("WORKDIRS", repr((dp, fsdp)))
            .replace("CACHE", repr(str(tmp_path / "jax_cache"))))
    proc = run_python(code, devices=8)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "resumed from" in out  # the second FSDP run restored sharded arrays from step 2

    losses = {w: [r["loss"] for r in _rows(w, "train")] for w in (dp, fsdp)}
    assert len(losses[dp]) == 4
    np.testing.assert_allclose(losses[fsdp], losses[dp], rtol=1e-5)
    a, b = (checkpoint.load_state(os.path.join(w, "checkpoints", "4")) for w in (dp, fsdp))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)

    mib = {w: float(out.split(f"MiB per device ({w})")[0].rsplit("train state ", 1)[1])
           for w in ("dp", "fsdp")}
    assert mib["fsdp"] < 0.4 * mib["dp"]

    leaves = json.loads(out.split("LEAVES ", 1)[1].splitlines()[0])
    split = {p: (tuple(full), tuple(shard)) for p, (full, shard, _) in leaves.items()
             if full != shard}
    mlp, query = "block0/mlp/fc1/kernel", "block0/attn/query/kernel"
    for prefix in ("params/", "ema_params/"):
        assert split[prefix + mlp] == ((32, 64), (32, 8))
        assert split[prefix + query] == ((32, 2, 16), (4, 2, 16))
        assert prefix + "head/kernel" not in split  # 320 elements: replicated
        assert prefix + "block0/mlp/fc1/bias" not in split
    # Adam's two moments of every split parameter are split the same way.
    for name, shapes in split.items():
        if name.startswith("params/"):
            moments = [p for p in split if p.startswith("opt_state/")
                       and p.endswith(name[len("params"):])]
            assert len(moments) == 2 and all(split[m] == shapes for m in moments), name
    assert leaves["params/" + mlp][2] == "P(None, 'data')"
    assert all(spec == "P()" for p, (_, _, spec) in leaves.items()
               if p.endswith(("bias", "scale")) or p == "step")
