"""The frozen teacher: its members read from disk, placed like the student, applied in the step.

`config.distill.teacher` names one member or a comma-separated ensemble; each is
- `WORKDIR`: a jaxcls training run (its best checkpoint, `jaxcls.evaluate.resolve_checkpoint`);
- `WORKDIR/checkpoints/STEP`: that checkpoint;
- `MODEL:PATH`: weights `jaxcls.weights.load` reads for registered model MODEL (a converted
  jaxcls checkpoint, timm / torchvision / Hugging Face / big_vision files), in
  `config.distill.teacher_layout`.

Each member keeps its own input normalisation (the mean/std it trained with) and sees the
student's images re-normalised to it (as timm's DistillationTeacher.normalize_input). An
ensemble's logits are the mean of its members' (the normalised geometric mean of their
probabilities).
"""

import dataclasses
import hashlib
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from jaxcls import models, sharding, weights

RECORD_FILE = "distill_teacher.json"  # in the student's workdir: the teacher a resume must match


@dataclasses.dataclass(frozen=True)
class Member:
    path: str  # the checkpoint read (a workdir resolved to its best step)
    model: str  # registered model name
    layout: str


@dataclasses.dataclass(frozen=True)
class Teacher:
    """Modules and input normalisation of the members; their variables travel separately (a
    jitted argument, sharded like the student's parameters)."""

    members: tuple[Member, ...]
    modules: tuple[nn.Module, ...]
    means: tuple[tuple[float, ...], ...]  # per member, in [0, 1] units
    stds: tuple[tuple[float, ...], ...]

    def logits(self, variables: tuple[dict, ...], images: jax.Array,
               mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
        """Mean logits [N, C] float32 of the members, without gradient, for `images`
        normalised with the student's `mean` / `std` (eval mode: BatchNorm running statistics,
        no dropout)."""
        pixels = (images.astype(jnp.float32) * jnp.asarray(std, jnp.float32)
                  + jnp.asarray(mean, jnp.float32))  # back to [0, 1]
        out = []
        for module, v, m, s in zip(self.modules, variables, self.means, self.stds, strict=True):
            x = ((pixels - jnp.asarray(m, jnp.float32)) / jnp.asarray(s, jnp.float32))
            logits = module.apply(jax.lax.stop_gradient(v), x.astype(images.dtype), train=False)
            out.append(logits.astype(jnp.float32))
        return jax.lax.stop_gradient(sum(out) / len(out))


def _is_workdir(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, "config.json"))
            and os.path.isdir(os.path.join(path, "checkpoints")))


def _run_config(step_dir: str) -> dict:
    with open(os.path.join(step_dir, "..", "..", "config.json")) as f:
        return json.load(f)


def parse_members(spec: str, layout: str = "auto") -> list[Member]:
    """The members of a `config.distill.teacher` spec, checked to exist (errors name the key
    and the path); a workdir resolves to its best checkpoint."""
    from jaxcls import evaluate  # (evaluate imports train, which imports this module)

    members = []
    for item in (s.strip() for s in spec.split(",")):
        model, _, path = item.partition(":") if ":" in item else ("", "", item)
        if model and model not in models.MODELS:
            raise ValueError(f"config.distill.teacher={spec!r}: {model!r} is not a registered "
                             f"model (MODEL:PATH); see python -m jaxcls.models")
        if not path or not os.path.exists(path):
            raise FileNotFoundError(f"config.distill.teacher={spec!r}: {path!r} does not exist")
        if _is_workdir(path):
            path = evaluate.resolve_checkpoint(path, "best")
        if not model:
            if not os.path.isdir(os.path.join(path, "state")):
                raise ValueError(f"config.distill.teacher={spec!r}: {path!r} is neither a jaxcls "
                                 f"workdir nor WORKDIR/checkpoints/STEP; name the model of other "
                                 f"weights as MODEL:PATH")
            model = _run_config(path)["model"]
        members.append(Member(os.path.abspath(path), model, layout))
    return members


def load(config: ml_collections.ConfigDict, num_classes: int, mesh
         ) -> tuple[Teacher, tuple[dict, ...]]:
    """(Teacher, its members' variables on `mesh`, placed by config.sharding's rules as the
    student's state is) for config.distill.teacher; every member must predict `num_classes`."""
    members = parse_members(config.distill.teacher, config.distill.teacher_layout)
    modules, means, stds, variables = [], [], [], []
    for member in members:
        ckpt = weights.read(member.path, member.model, member.layout)
        if ckpt.num_classes != num_classes:
            raise ValueError(f"config.distill.teacher: {member.path} predicts "
                             f"{ckpt.num_classes} classes, the student {num_classes}")
        module, v = weights.build(ckpt, member.model, image_size=config.image_size,
                                  dtype=jnp.dtype(config.dtype))
        v = jax.tree.map(np.asarray, v)
        shardings = sharding.tree_shardings(mesh, v, sharding.rules(config.sharding),
                                            config.fsdp_min_size)
        variables.append(sharding.put(v, shardings))
        modules.append(module)
        means.append(tuple(ckpt.preprocessing.get("mean", config.mean)))
        stds.append(tuple(ckpt.preprocessing.get("std", config.std)))
        logging.info("teacher %s (%s): %s parameters", member.path, member.model,
                     f"{sum(x.size for x in jax.tree.leaves(v['params'])):,}")
    return Teacher(tuple(members), tuple(modules), tuple(means), tuple(stds)), tuple(variables)


def fingerprint(variables) -> str:
    """SHA-1 of every array of `variables` (paths, shapes, dtypes and bytes)."""
    h = hashlib.sha1()
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        x = np.asarray(jax.device_get(leaf))
        h.update(f"{sharding.path_str(path)}{x.shape}{x.dtype}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def check_same_teacher(workdir: str, teacher: Teacher, variables: tuple[dict, ...],
                       resuming: bool) -> None:
    """Records the teacher in WORKDIR/distill_teacher.json when a run starts; a resumed run must
    find the same weights there (the teacher is reloaded, not checkpointed: see __init__)."""
    record = {"members": [dataclasses.asdict(m) for m in teacher.members],
              "fingerprint": fingerprint(variables)}
    path = os.path.join(workdir, RECORD_FILE)
    if resuming and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved["fingerprint"] != record["fingerprint"]:
            raise ValueError(f"{path}: this run started with teacher {saved['members']}; the "
                             f"teacher now read ({record['members']}) has different weights, "
                             f"so resuming would not continue the same run")
    elif jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(record, f, indent=2)
