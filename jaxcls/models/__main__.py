"""Lists every registered model: parameters (1000 classes) and forward GMACs at its default
resolution.

MACs are counted as papers, fvcore and timm count them: the multiply-accumulates of every
convolution and matrix product in the traced forward pass. (XLA's cost analysis also counts
elementwise work such as GELU's erf, which puts ConvNeXt-T at 4.74 "GMACs" against 4.47.)

    python -m jaxcls.models [--names vit_b16,convnext_tiny]
"""

import math

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.extend import core

from jaxcls import models
from jaxcls.models import conv

flags.DEFINE_list("names", None, "Models to list (default: all).")


def _macs(jaxpr: core.Jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
        elif eqn.primitive.name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape  # kernel: spatial dims, in / groups, out
            spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) positions
            per_output = math.prod(rhs[d] for d in spec[1:])
            total += math.prod(eqn.outvars[0].aval.shape) * per_output
        for sub in core.jaxprs_in_params(eqn.params):
            total += _macs(sub)
    return total


def count(name: str, image_size: int | None = None, num_classes: int = 1000) -> dict:
    """{'params': int, 'gmacs': float} of one forward pass on one image, without allocating."""
    size = image_size or models.DEFAULT_IMAGE_SIZE[name]
    model = models.create(name, num_classes)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    with conv.library_convolutions():
        jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    return {"params": sum(v.size for v in jax.tree.leaves(variables["params"])),
            "gmacs": _macs(jaxpr.jaxpr) / 1e9, "image_size": size}


def main(argv):
    del argv
    names = flags.FLAGS.names or list(models.MODELS)
    width = max(len(n) for n in names) + 2
    print(f"{'model':<{width}}{'params':>14}{'GMACs':>9}  size")
    for name in names:
        c = count(name)
        print(f"{name:<{width}}{c['params']:>14,}{c['gmacs']:>9.2f}  {c['image_size']}",
              flush=True)


if __name__ == "__main__":
    app.run(main)
