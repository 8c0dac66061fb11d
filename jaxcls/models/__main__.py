"""Lists every registered model: parameters (1000 classes) and forward GMACs at its default
resolution.

MACs are counted as papers, fvcore and timm count them: the multiply-accumulates of every
convolution and matrix product in the traced forward pass. (XLA's cost analysis also counts
elementwise work such as GELU's erf, which puts ConvNeXt-T at 4.74 "GMACs" against 4.47.)

    python -m jaxcls.models [vit] [--names vit_b16,convnext_tiny] [--recount]

A positional argument keeps the models whose name contains it (`vit`, `convnext_t`). Tracing
all the models takes minutes on 2 CPU cores, so the table prints the figures recorded in
FIGURES below, each with a fingerprint of its model's fields (the module's repr); a model whose
fields changed, or one not recorded, is traced (`count`). `--recount` traces every listed
model and prints FIGURES' new lines; tests/test_models.py checks the recorded figures against
fresh counts.
"""

import hashlib
import math

import jax
import jax.numpy as jnp
from absl import flags
from jax.extend import core

from jaxcls import cli, models
from jaxcls.models import conv

# name: (parameters, GMACs, image size, fingerprint) at 1000 classes, from `count` (2026-12-03).
FIGURES = {
    "resnet18": (11689512, 1.8141, 224, "63bf34e22ea3"),
    "resnet34": (21797672, 3.6638, 224, "2e0be045b7c3"),
    "resnet50": (25557032, 4.0892, 224, "6a8a02457ade"),
    "resnet101": (44549160, 7.8014, 224, "d8401d7d1228"),
    "resnet152": (60192808, 11.5136, 224, "57e25df9f79b"),
    "vit_ti16": (5717416, 1.2537, 224, "1029b54631cd"),
    "vit_s16": (22050664, 4.5989, 224, "8a53b64e86fd"),
    "vit_s32": (22878952, 1.1429, 224, "36a7bc3d9f56"),
    "vit_b16": (86567656, 17.5638, 224, "2d8101248156"),
    "vit_b32": (88224232, 4.4092, 224, "d7f8f085cd97"),
    "vit_b8": (86576872, 78.1483, 224, "b143cd896add"),
    "vit_l16": (304326632, 61.5547, 224, "09a0c8641ebd"),
    "vit_l32": (306535400, 15.3775, 224, "f180884a02e6"),
    "vit_h14": (632045800, 167.2951, 224, "6999c75f98eb"),
    "vit_ti4": (5553832, 0.3653, 32, "c9937287a8bd"),
    "vit_s4": (21723496, 1.4207, 32, "d9d2bd0c9365"),
    "vit_s8": (21760360, 0.3652, 32, "b3900503fb14"),
    "clip_vit_b32": (88362216, 4.4093, 224, "07882a214a93"),
    "clip_vit_b16": (86705640, 17.5640, 224, "6474aadb20eb"),
    "clip_vit_l14": (304735208, 81.0135, 224, "fbabdddc9b56"),
    "convnext_atto": (3695520, 0.5473, 224, "6d1ca39ea762"),
    "convnext_nano": (15593560, 2.4455, 224, "54c3b4d0185e"),
    "convnext_tiny": (28589128, 4.4555, 224, "3095630cdd4e"),
    "convnext_small": (50223688, 8.6837, 224, "d4349ae1f313"),
    "convnext_base": (88591464, 15.3547, 224, "63c24ee65d12"),
    "convnext_large": (197767336, 34.3614, 224, "ea5f016d215e"),
    "convnext_xlarge": (350196968, 60.9210, 224, "2d689b2aa50e"),
    "lenet5": (146156, 0.0007, 32, "860ac0c86739"),
    "airbench94": (2225080, 0.1184, 32, "8a713ad623a7"),
    "alexnet": (61100840, 0.7142, 224, "a2acc8531be1"),
    "vgg11": (132863336, 7.6091, 224, "d041f6d737c0"),
    "vgg11_bn": (132868840, 7.6091, 224, "b138e1cccbba"),
    "vgg13": (133047848, 11.3085, 224, "d765b6fbd42d"),
    "vgg13_bn": (133053736, 11.3085, 224, "058c7c5080cb"),
    "vgg16": (138357544, 15.4703, 224, "e64c842c512e"),
    "vgg16_bn": (138365992, 15.4703, 224, "ddf25135ca65"),
    "vgg19": (143667240, 19.6321, 224, "fac824d396dd"),
    "vgg19_bn": (143678248, 19.6321, 224, "11330f4ee5c5"),
    "googlenet": (6624904, 1.4984, 224, "102cfbc01f9a"),
    "inception_v3": (23834568, 5.7132, 299, "8c74f1e8ed06"),
    "densenet121": (7978856, 2.8342, 224, "882608d8ba52"),
    "densenet161": (28681000, 7.7279, 224, "8b28436c4250"),
    "densenet169": (14149480, 3.3598, 224, "b0c040eecc87"),
    "densenet201": (20013928, 4.2914, 224, "d1c612e87d21"),
    "efficientnet_b0": (5288548, 0.3858, 224, "ae4f3cf0dfe6"),
    "efficientnet_b1": (7794184, 0.6868, 240, "dc9b57d7ef9a"),
    "efficientnet_b2": (9109994, 0.9936, 260, "45b0f6779504"),
    "efficientnet_b3": (12233232, 1.8271, 300, "6de6abf631e3"),
    "efficientnet_b4": (19341616, 4.3938, 380, "49e26ab0ba17"),
    "efficientnet_b5": (30389784, 10.2664, 456, "d6d98a6b0403"),
    "efficientnet_b6": (43040704, 19.0676, 528, "cb429a8d0bda"),
    "efficientnet_b7": (66347960, 37.7459, 600, "0f9e088b458b"),
    "efficientnet_lite0": (4652008, 0.3852, 224, "934c8c4440eb"),
    "efficientnet_lite1": (5416680, 0.6002, 240, "a7e412f7a73d"),
    "efficientnet_lite2": (6092072, 0.8597, 260, "d723488bfe06"),
    "efficientnet_lite3": (8197096, 1.6076, 300, "7277c29bf11d"),
    "efficientnet_lite4": (13006568, 3.9436, 380, "76ec5004ef93"),
    "tf_efficientnet_b0": (5288548, 0.3858, 224, "3f76a0ba8682"),
    "tf_efficientnet_b1": (7794184, 0.6868, 240, "c237f7c7edc5"),
    "tf_efficientnet_b2": (9109994, 0.9936, 260, "97ec9a3a91c2"),
    "tf_efficientnet_b3": (12233232, 1.8271, 300, "1815bbc43d54"),
    "tf_efficientnet_b4": (19341616, 4.3938, 380, "56db2e5716c0"),
    "tf_efficientnet_b5": (30389784, 10.2664, 456, "038c2ef6c923"),
    "tf_efficientnet_b6": (43040704, 19.0676, 528, "4da2f6f18f54"),
    "tf_efficientnet_b7": (66347960, 37.7459, 600, "a2db4d2367ef"),
    "tf_efficientnet_lite0": (4652008, 0.3852, 224, "515b3d3523cd"),
    "tf_efficientnet_lite1": (5416680, 0.6002, 240, "19602f271855"),
    "tf_efficientnet_lite2": (6092072, 0.8597, 260, "24cb972dd092"),
    "tf_efficientnet_lite3": (8197096, 1.6076, 300, "c01a8dd241b1"),
    "tf_efficientnet_lite4": (13006568, 3.9436, 380, "5b1fb66ab5fe"),
    "mobilenetv2_100": (3504872, 0.3008, 224, "ff0ebd64510f"),
    "mobilenetv3_large_100": (5483032, 0.2166, 224, "495a683ffce4"),
    "mobilenetv3_small_100": (2542856, 0.0565, 224, "c3f50a326a21"),
    "tf_mobilenetv3_large_100": (5483032, 0.2166, 224, "5228f83f1c35"),
    "tf_mobilenetv3_small_100": (2542856, 0.0565, 224, "308b08134f36"),
    # RegNetY, CoAtNet (2026-12-03): timm's figures (tests/test_zoo_regnet.py, _coatnet.py).
    "regnety_016": (11202430, 1.6121, 224, "bf5c20eea5d4"),
    "regnety_032": (19436338, 3.1765, 224, "6449a327873f"),
    "regnety_040": (20646656, 3.9733, 224, "f84e7bb794f7"),
    "regnety_080": (39180068, 7.9631, 224, "ab4110f26e7b"),
    "regnety_160": (83590140, 15.9115, 224, "e6e4338e1c23"),
    "coatnet_0_rw_224": (27435562, 4.4063, 224, "13f95c3d3e01"),
    "coatnet_1_rw_224": (41721502, 7.9922, 224, "dd328aae83db"),
    "coatnet_0_224": (25036820, 4.5465, 224, "ba7b1dfd33fa"),
    # Swin, DeiT (2026-12-03): timm's figures (tests/test_zoo_attn.py).
    "swin_tiny_patch4_window7_224": (28288354, 4.4906, 224, "e5dd560d2471"),
    "swin_small_patch4_window7_224": (49606258, 8.7409, 224, "d26a3bba3dff"),
    "swin_base_patch4_window7_224": (87768224, 15.4309, 224, "25e95cd028cc"),
    "deit_tiny_patch16_224": (5717416, 1.2537, 224, "1029b54631cd"),
    "deit_small_patch16_224": (22050664, 4.5989, 224, "8a53b64e86fd"),
    "deit_base_patch16_224": (86567656, 17.5638, 224, "2d8101248156"),
    "deit_tiny_distilled_patch16_224": (5910800, 1.2610, 224, "7d6f91c19d78"),
    "deit_small_distilled_patch16_224": (22436432, 4.6241, 224, "620e42bcd910"),
    "deit_base_distilled_patch16_224": (87338192, 17.6568, 224, "ef009132c17d"),
}


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


def fingerprint(name: str) -> str:
    """A short hash of the registered model's fields at 1000 classes (its repr)."""
    return hashlib.sha1(repr(models.create(name, 1000)).encode()).hexdigest()[:12]


def figures(name: str, recount: bool = False) -> dict:
    """`count(name)` from FIGURES when recorded for the model's current fields (and not
    `recount`), else traced; 'cached' says which."""
    recorded = FIGURES.get(name)
    if not recount and recorded and recorded[3] == fingerprint(name):
        return {"params": recorded[0], "gmacs": recorded[1], "image_size": recorded[2],
                "cached": True}
    return {**count(name), "cached": False}


def select(patterns: list[str], names: list[str] | None = None) -> list[str]:
    """Registered models named in `names` (all when None) whose name contains any of
    `patterns` (all when none); an unknown name or a pattern matching nothing fails."""
    for name in names or ():
        models.check_name(name)
    chosen = [n for n in (names or models.MODELS) if not patterns
              or any(p.lower() in n.lower() for p in patterns)]
    if not chosen:
        raise ValueError(f"no registered model name contains {patterns}; models: "
                         f"{list(models.MODELS)}")
    return chosen


def main(argv):
    f = flags.FLAGS
    chosen = select(argv[1:], f.names)  # a bad name fails naming it (cli.run prints it)
    width = max(len(n) for n in chosen) + 2
    print(f"{'model':<{width}}{'params':>14}{'GMACs':>9}  size")
    recounted = []
    for name in chosen:
        c = figures(name, f.recount)
        print(f"{name:<{width}}{c['params']:>14,}{c['gmacs']:>9.2f}  {c['image_size']}"
              + ("" if c["cached"] else "  (traced)"), flush=True)
        if not c["cached"]:
            recounted.append(f'    "{name}": ({c["params"]}, {c["gmacs"]:.4f}, '
                             f'{c["image_size"]}, "{fingerprint(name)}"),')
    if f.recount and recounted:
        print("\nFIGURES lines (jaxcls/models/__main__.py):\n" + "\n".join(recounted))


if __name__ == "__main__":
    flags.DEFINE_list("names", None, "Models to list (default: all).")
    flags.DEFINE_bool("recount", False, "Trace every listed model instead of using FIGURES.")
    cli.run(main)
