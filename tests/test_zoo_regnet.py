"""RegNetY: logits equal to timm's and Hugging Face transformers' models (random init,
non-trivial BatchNorm statistics) through `jaxcls.weights.load`; widths, groups and figures
equal timm's for every variant."""

import pytest

from jaxcls import models
from jaxcls.models import __main__ as listing
from jaxcls.models import regnet
from tests.conftest import torch_references
from tests.test_zoo_mobile import _assert_same_logits, _randomised, _torch_counts

NAMES = list(regnet.MODELS)


@pytest.fixture(scope="module")
def refs():
    return torch_references()


def test_logits_equal_timm_regnety_016_at_32(refs, tmp_path):
    torch, _, timm = refs
    torch.manual_seed(0)
    ref = _randomised(timm.create_model("regnety_016", num_classes=7), torch)
    _assert_same_logits(torch, ref, "regnety_016", 32, tmp_path, "timm")


def _hf_regnet(torch, **config):
    """transformers' RegNetForImageClassification (random init, randomised BatchNorm), called
    on pixels to give its logits as timm's models do."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = _randomised(transformers.RegNetForImageClassification(
        transformers.RegNetConfig(**config)), torch)

    class Logits:
        def __call__(self, x):
            return model(pixel_values=x).logits

        def state_dict(self):
            return model.state_dict()

    return Logits()


def test_logits_equal_transformers_small_regnet(refs, tmp_path):
    """A two-stage RegNetY in Hugging Face's layout (stem 8, widths 16 / 48 in groups of 8),
    loaded as regnety_016 with those fields."""
    torch = refs[0]
    ref = _hf_regnet(torch, embedding_size=8, hidden_sizes=(16, 48), depths=(1, 2),
                     groups_width=8, num_labels=5)
    _assert_same_logits(torch, ref, "regnety_016", 32, tmp_path, "hf", stem_channels=8,
                        stages=(regnet.Stage(1, 16, 8), regnet.Stage(2, 48, 8)))


def test_stage_widths_and_groups_equal_timm(refs):
    """Stage depths, widths and groups from the (w0, wa, wm, depth) rule, as timm builds them."""
    torch, _, timm = refs
    for name in NAMES:
        with torch.device("meta"):
            ref = timm.create_model(name)
        want = [(len(list(s.children())), s.b1.conv3.conv.out_channels,
                 s.b1.conv2.conv.out_channels // s.b1.conv2.conv.groups)
                for s in (ref.s1, ref.s2, ref.s3, ref.s4)]
        assert [tuple(s) for s in models.create(name, 10).stages] == want, name


@pytest.mark.slow
def test_params_and_macs_equal_timm_for_every_variant(refs):
    """`python -m jaxcls.models`'s figures (1000 classes, 224) are timm's conv + linear MACs."""
    torch, _, timm = refs
    for name in NAMES:
        with torch.device("meta"):
            ref = timm.create_model(name).eval()
        ours = listing.count(name)
        assert (ours["params"], round(ours["gmacs"] * 1e9)) == _torch_counts(torch, ref, 224)
        assert listing.FIGURES[name] == (ours["params"], round(ours["gmacs"], 4), 224,
                                         listing.fingerprint(name)), name


@pytest.mark.slow
def test_full_size_logits_equal_timm_regnety_032(refs, tmp_path):
    torch, _, timm = refs
    torch.manual_seed(0)
    ref = _randomised(timm.create_model("regnety_032"), torch)
    _assert_same_logits(torch, ref, "regnety_032", 224, tmp_path, "timm")


@pytest.mark.slow
def test_full_size_logits_equal_transformers_regnet_y_040(refs, tmp_path):
    """transformers' default RegNetConfig is facebook/regnet-y-040's: jaxcls' regnety_040."""
    torch = refs[0]
    ref = _hf_regnet(torch)
    _assert_same_logits(torch, ref, "regnety_040", 224, tmp_path, "hf")
