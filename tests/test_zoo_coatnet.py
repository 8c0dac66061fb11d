"""CoAtNet: logits equal to timm's MaxxVit CoAtNets (random init, non-trivial BatchNorm
statistics) through `jaxcls.weights.load`, at a small resolution (the relative position bias
tables are sized by it) and at 224; parameters and MACs equal timm's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcls import explain, models, weights
from jaxcls.models import __main__ as listing
from jaxcls.models import coatnet
from tests.conftest import torch_references
from tests.test_zoo_mobile import _assert_same_logits, _randomised, _torch_counts
from tests.test_zoo_regnet import assert_default_gradcam_layer_is_the_cam

NAMES = list(coatnet.MODELS)


@pytest.fixture(scope="module")
def refs():
    return torch_references()


def _timm(timm, torch, name: str, size: int, **kwargs):
    torch.manual_seed(0)
    return _randomised(timm.create_model(name, img_size=size, **kwargs), torch)


def test_logits_equal_timm_coatnet_0_rw_at_64(refs, tmp_path):
    """64 px: MBConv stages at 16 and 8, attention over 4x4 and 2x2 maps; one or two blocks a
    stage (strided and not, of both kinds; the 224 px test has every block)."""
    torch, _, timm = refs
    depths = (1, 2, 2, 1)
    ref = _timm(timm, torch, "coatnet_0_rw_224", 64, num_classes=7, depths=depths)
    model, variables = _assert_same_logits(torch, ref, "coatnet_0_rw_224", 64, tmp_path, "timm",
                                           depths=depths)
    ckpt = weights.read(str(tmp_path / "weights.pth"), "coatnet_0_rw_224")
    assert (ckpt.preprocessing["mean"], ckpt.preprocessing["crop_frac"]) == ((0.5,) * 3, 0.95)
    table = variables["params"]["stage3_block2"]["attn"]["relative_position_bias_table"]
    assert table.shape == (7 * 7, 384 // 32)  # (2h - 1)(2w - 1) rows for the 4x4 map


def test_relative_position_index_equals_timm(refs):
    """The numpy index into the bias table is timm's for square and oblong maps."""
    from timm.layers.pos_embed_rel import gen_relative_position_index

    for h, w in ((4, 4), (3, 5), (7, 7)):
        np.testing.assert_array_equal(coatnet.relative_position_index(h, w),
                                      gen_relative_position_index((h, w)).numpy())


def test_bias_table_is_tied_to_the_resolution(refs, tmp_path):
    """Weights from 64 px do not load at 96 px: the tables name the mismatch."""
    torch, _, timm = refs
    ref = timm.create_model("coatnet_0_rw_224", img_size=64, num_classes=3)
    path = str(tmp_path / "w.pth")
    torch.save(ref.state_dict(), path)
    with pytest.raises(ValueError, match=r"relative_position_bias_table \(49, 12\) vs model "
                                         r"\(121, 12\)"):
        weights.load(path, "coatnet_0_rw_224", image_size=96)


def _attention_macs(torch, timm_model, size: int) -> int:
    """MACs of the attention products (q k^T and weights v) of timm's Attention2d modules,
    which timm's conv / linear count leaves out and jaxcls' (every matrix product) includes."""
    from timm.models.maxxvit import Attention2d

    macs = [0]

    def hook(m, inputs, out):
        tokens = inputs[0].shape[2] * inputs[0].shape[3]
        macs[0] += 2 * tokens * tokens * m.num_heads * m.dim_head

    for m in timm_model.modules():
        if isinstance(m, Attention2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        timm_model(torch.zeros(1, 3, size, size, device="meta"))
    return macs[0]


@pytest.mark.slow
def test_params_and_macs_equal_timm_for_every_variant(refs):
    torch, _, timm = refs
    for name in NAMES:
        with torch.device("meta"):
            ref = timm.create_model(name).eval()
        ours = listing.count(name)
        params, macs = _torch_counts(torch, ref, 224)
        assert ours["params"] == params, name
        assert round(ours["gmacs"] * 1e9) == macs + _attention_macs(torch, ref, 224), name
        assert listing.FIGURES[name] == (ours["params"], round(ours["gmacs"], 4), 224,
                                         listing.fingerprint(name)), name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["coatnet_1_rw_224", "coatnet_0_224"])
def test_full_size_logits_equal_timm(refs, name, tmp_path):
    torch, _, timm = refs
    ref = _timm(timm, torch, name, 224)
    _assert_same_logits(torch, ref, name, 224, tmp_path, "timm")


_SMALL = {"depths": (1, 1, 1, 1), "dims": (32, 32, 32, 64), "stem_width": (8, 16)}


def test_gradcam_default_layer_is_the_final_norm_or_last_block():
    """timm's rw CoAtNets normalise the map before pooling (`norm`); the paper's layout pools
    first (its LayerNorm is on the pooled features), so its last block is the default."""
    for name, layer in (("coatnet_0_rw_224", "norm"), ("coatnet_0_224", "stage4_block1")):
        model = models.create(name, 3, **_SMALL)
        variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
        assert explain.default_layer(explain.spatial_layers(model, variables, (64, 64, 3))) == (
            layer)


@pytest.mark.slow
def test_gradcam_at_the_final_norm_is_the_class_activation_map():
    assert_default_gradcam_layer_is_the_cam(models.create("coatnet_0_rw_224", 3, **_SMALL), 64,
                                            "norm")
