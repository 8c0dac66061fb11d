"""Swin and DeiT: logits equal to timm's and Hugging Face's models (random init, every parameter
randomised so that each one matters) through `jaxcls.weights.load`, at small configurations
in the default suite and at full size in the slow group; parameters and GMACs equal timm's."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch as safetensors_torch

from jaxcls import distill, losses, models, weights
from jaxcls.models import __main__ as listing
from jaxcls.models import swin
from jaxcls.weights import files, layouts
from tests.conftest import torch_references

# Small Swin: 64 px, 4x4 windows -> maps 16, 8 (shifted windows), 4 (fits one window: no
# shift), 2 (window shrinks to 2). At 72 px: 18, 9 (padded to 20, 12), 5 (padded, shifted), 3.
SWIN_SMALL = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4),
              "window_size": 4}
DEIT_SMALL = {"patch_size": 8, "width": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64}
SWIN_T, DEIT_TD = "swin_tiny_patch4_window7_224", "deit_tiny_distilled_patch16_224"


@pytest.fixture(scope="module")
def refs():
    return torch_references()


def _randomised(model, torch):
    """`model` in eval mode with every parameter drawn afresh (norm scales around 1, position
    bias tables, tokens and heads far from their zero or tiny initialisations)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if re.search(r"norm|layernorm", name) and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.ndim == 1 else 0.2))
    return model.eval()


@functools.cache
def _forward(model):
    """One compiled eval forward per distinct model (equal modules hash equal), without LLVM's
    optimisations (half the compile time here)."""
    return jax.jit(lambda v, x: model.apply(v, x, train=False),
                   compiler_options={"xla_backend_optimization_level": 0})


def _images(size: int) -> np.ndarray:
    return np.random.RandomState(0).randn(2, size, size, 3).astype(np.float32)


def _torch_logits(torch, ref, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    return getattr(out, "logits", out).numpy()


def _assert_same(path: str, name: str, x: np.ndarray, want: np.ndarray, **kwargs):
    model, variables = weights.load(path, name, image_size=x.shape[1], **kwargs)
    got = _forward(model)(variables, jnp.asarray(x))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    return model, variables


def _save_pth(torch, ref, path, layout: str) -> str:
    torch.save(ref.state_dict(), path)
    assert layouts.detect(list(files.read_tensors(path))) == layout
    return path


# ---- Swin ------------------------------------------------------------------------------------

# 72 px in the default suite (padding, shifts, a shrunk window); 64 px (whole windows) is slow.
@pytest.mark.parametrize("size", [72, pytest.param(64, marks=pytest.mark.slow)])
def test_swin_logits_equal_timm(refs, size, tmp_path):
    torch, _, timm = refs
    ref = _randomised(timm.create_model(SWIN_T, num_classes=7, img_size=size, **SWIN_SMALL),
                      torch)
    x = _images(size)
    path = _save_pth(torch, ref, str(tmp_path / "swin.pth"), "timm")
    model, variables = _assert_same(path, SWIN_T, x, _torch_logits(torch, ref, x), **SWIN_SMALL)
    # The windows, shifts, masks and relative indices are timm's, block by block.
    blocks = [b for stage in ref.layers for b in stage.blocks]
    seen = []
    for b in blocks:
        h, w = b.input_resolution
        window, shift = swin.window_and_shift((h, w), 4, bool(any(b.target_shift_size)))
        assert (window, shift) == (tuple(b.window_size), tuple(b.shift_size))
        np.testing.assert_array_equal(swin.relative_position_index(window),
                                      b.attn.relative_position_index.numpy())
        if any(shift):
            hp, wp = -(-h // window[0]) * window[0], -(-w // window[1]) * window[1]
            np.testing.assert_array_equal(swin.shift_mask((hp, wp), window, shift),
                                          b.attn_mask.numpy())
        seen.append((h, any(shift)))
    # Shifted and unshifted blocks, and (at 72) maps padded to whole windows, were all checked.
    assert (16 if size == 64 else 18, True) in seen and (4 if size == 64 else 3, False) in seen


def _hub_era(state: dict) -> dict:
    """Hugging Face Swin keys as checkpoints on the Hub (transformers < 5) spell them, with the
    relative position index buffer they stored."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"attention\.(q|k|v)_proj",
                     lambda m: f"attention.self.{dict(q='query', k='key', v='value')[m[1]]}", key)
        key = key.replace("attention.o_proj", "attention.output.dense")
        key = key.replace("attention.relative_position_bias.relative_position_bias_table",
                          "attention.self.relative_position_bias_table")
        key = key.replace("mlp.fc1", "intermediate.dense").replace("mlp.fc2", "output.dense")
        out[key] = value
        if key.endswith("relative_position_bias_table"):
            out[key.replace("_bias_table", "_index")] = np.zeros((4 * 4,), np.int64)
    return out


def test_swin_logits_equal_hugging_face(refs, tmp_path):
    torch, _, _ = refs
    import transformers

    torch.manual_seed(0)
    # 2x2 windows on maps 8 and 4, all shifted: transformers keeps the configured window's
    # bias table where a map is smaller than the window (timm shrinks both), so none is here.
    config = transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[1, 2],
        window_size=2, num_labels=7)
    ref = _randomised(transformers.SwinForImageClassification(config), torch)
    folder = str(tmp_path / "hf")
    ref.save_pretrained(folder)
    assert weights.read(folder, SWIN_T).layout == "hf"
    x = _images(32)
    want = _torch_logits(torch, ref, x)
    kwargs = {**SWIN_SMALL, "depths": (2, 2), "num_heads": (1, 2), "window_size": 2}
    _assert_same(folder, SWIN_T, x, want, **kwargs)
    old = _hub_era({k: v.numpy() for k, v in ref.state_dict().items()})
    path = str(tmp_path / "hub.safetensors")
    safetensors_torch.save_file({k: torch.from_numpy(v) for k, v in old.items()}, path)
    _assert_same(path, SWIN_T, x, want, **kwargs)


def test_swin_logits_equal_torchvision(refs, tmp_path):
    """torchvision's Swin (swin_t's class) on maps 16, 8 (shifted) and 4 (one window)."""
    torch, torchvision, _ = refs
    torch.manual_seed(0)
    ref = _randomised(torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2], num_heads=[1, 2, 2],
        window_size=[4, 4], num_classes=7), torch)
    path = _save_pth(torch, ref, str(tmp_path / "swin_tv.pth"), "torchvision")
    x = _images(64)
    _assert_same(path, SWIN_T, x, _torch_logits(torch, ref, x),
                 **{**SWIN_SMALL, "depths": (2, 2, 2), "num_heads": (1, 2, 2)})


# ---- DeiT ------------------------------------------------------------------------------------

def _deit_timm(timm, torch, name: str):
    return _randomised(timm.create_model(
        name, num_classes=7, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
        mlp_ratio=2.0), torch)


@pytest.mark.parametrize("name", ["deit_tiny_patch16_224", DEIT_TD])
def test_deit_logits_equal_timm(refs, name, tmp_path):
    torch, _, timm = refs
    ref = _deit_timm(timm, torch, name)
    x = _images(32)
    path = _save_pth(torch, ref, str(tmp_path / "deit.pth"), "timm")
    _assert_same(path, name, x, _torch_logits(torch, ref, x), **DEIT_SMALL)


def test_distilled_deit_heads_for_distillation_and_new_classes(refs, tmp_path):
    """Eval logits are the mean of the two heads; distillation_output gives both in training,
    and jaxcls's DeiT distillation loss on them equals timm's; other classes get both heads
    afresh and keep the backbone."""
    torch, _, timm = refs
    ref = _deit_timm(timm, torch, DEIT_TD)
    ref.set_distilled_training(True)
    ref.train()
    x = _images(32)
    with torch.no_grad():
        want_cls, want_dist = (t.numpy() for t in ref(torch.from_numpy(x.transpose(0, 3, 1, 2))))
    path = _save_pth(torch, ref, str(tmp_path / "deit.pth"), "timm")
    model, variables = weights.load(path, DEIT_TD, image_size=32, distillation_output=True,
                                    **DEIT_SMALL)
    cls, dist = jax.jit(lambda v, x: model.apply(v, x, train=True), compiler_options={
        "xla_backend_optimization_level": 0})(variables, jnp.asarray(x))
    for got, want in ((cls, want_cls), (dist, want_dist)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    assert not np.allclose(cls, dist)  # two different heads, not one read twice
    # DeiT's hard distillation on these two heads (config.distill.loss='deit') equals timm's
    # TokenDistillationTask (labels on the class head, the teacher's argmax on head_dist).
    from timm.task.token_distillation import TokenDistillationTask

    teacher_logits = np.random.RandomState(1).randn(2, 7).astype(np.float32)
    labels = np.array([1, 3])

    class FixedTeacher(torch.nn.Module):
        def forward(self, images):
            return torch.from_numpy(teacher_logits)

    task = TokenDistillationTask(ref, FixedTeacher(), criterion=torch.nn.CrossEntropyLoss(),
                                 distill_type="hard", task_loss_weight=0.5, verbose=False)
    with torch.no_grad():
        want_loss = task(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                         torch.from_numpy(labels))["loss"].item()
    got, _ = distill.distillation_loss("deit", (cls, dist), jnp.asarray(labels),
                                       jnp.asarray(teacher_logits),
                                       losses.softmax_cross_entropy, 0.5, 1.0)
    assert float(jnp.mean(got)) == pytest.approx(want_loss, rel=1e-5)
    eval_model = model.clone(distillation_output=False)  # the registry's eval model
    np.testing.assert_allclose(_forward(eval_model)(variables, jnp.asarray(x)), (cls + dist) / 2,
                               rtol=1e-6, atol=1e-6)
    _, fresh = weights.load(path, DEIT_TD, num_classes=3, image_size=32, **DEIT_SMALL)
    for head in ("head", "head_dist"):
        assert fresh["params"][head]["kernel"].shape == (32, 3)
    np.testing.assert_array_equal(fresh["params"]["dist_token"], variables["params"]["dist_token"])
    # The position embedding of both prefix tokens survives a new resolution.
    _, larger = weights.load(path, DEIT_TD, image_size=48, **DEIT_SMALL)
    posemb = np.asarray(larger["params"]["pos_embedding"])
    assert posemb.shape == (1, 2 + 36, 32)
    np.testing.assert_array_equal(posemb[:, :2], variables["params"]["pos_embedding"][:, :2])


def test_deit_logits_equal_hugging_face(refs, tmp_path):
    """Distilled DeiTs in DeiTForImageClassificationWithTeacher's layout; the plain ones are
    published as ViTForImageClassification."""
    torch, _, _ = refs
    import transformers

    torch.manual_seed(0)
    kw = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
          "num_attention_heads": 2, "intermediate_size": 64, "num_labels": 7}
    x = _images(32)
    for name, ref in ((DEIT_TD, transformers.DeiTForImageClassificationWithTeacher(
                          transformers.DeiTConfig(**kw))),
                      ("deit_tiny_patch16_224", transformers.ViTForImageClassification(
                          transformers.ViTConfig(**kw)))):
        ref = _randomised(ref, torch)
        folder = str(tmp_path / name)
        ref.save_pretrained(folder)
        ckpt = weights.read(folder, name)
        assert ckpt.layout == "hf" and ckpt.model_kwargs["layer_norm_eps"] == 1e-12
        _assert_same(folder, name, x, _torch_logits(torch, ref, x), **DEIT_SMALL)


# ---- parameters and GMACs ----------------------------------------------------------------------

def _torch_counts(torch, model, size: int) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one forward pass: torch's FLOP counter, which
    counts every matrix product and convolution, attention's included, halved)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size, device="meta"))
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def _assert_counts_equal_timm(torch, timm, name: str):
    with torch.device("meta"):
        ref = timm.create_model(name).eval()
    ours = listing.count(name)
    params, macs = _torch_counts(torch, ref, ours["image_size"])
    assert (ours["params"], round(ours["gmacs"] * 1e9)) == (params, macs), name
    # What `python -m jaxcls.models` prints without tracing is this fresh count.
    assert listing.FIGURES[name] == (ours["params"], round(ours["gmacs"], 4),
                                     ours["image_size"], listing.fingerprint(name)), name


def test_swin_tiny_params_and_macs_equal_timm(refs):
    torch, _, timm = refs
    _assert_counts_equal_timm(torch, timm, SWIN_T)
    assert listing.FIGURES[SWIN_T][:2] == (28_288_354, 4.4906)  # timm: 28.29M, 4.5 GMACs


COUNTED = [n for n in models.MODELS if models.family(n) in ("swin", "deit")]


@pytest.mark.slow
def test_params_and_macs_equal_timm_for_every_variant(refs):
    torch, _, timm = refs
    for name in COUNTED:
        _assert_counts_equal_timm(torch, timm, name)


# ---- full size -------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", [SWIN_T, DEIT_TD])
def test_full_size_logits_equal_timm(refs, name, tmp_path):
    torch, _, timm = refs
    ref = _randomised(timm.create_model(name), torch)
    x = _images(224)
    path = _save_pth(torch, ref, str(tmp_path / "full.pth"), "timm")
    _assert_same(path, name, x, _torch_logits(torch, ref, x))


@pytest.mark.slow
@pytest.mark.parametrize("name", [SWIN_T, DEIT_TD])
def test_full_size_logits_equal_hugging_face(refs, name, tmp_path):
    torch, _, _ = refs
    import transformers

    torch.manual_seed(0)
    if name == SWIN_T:  # SwinConfig's defaults are Swin-T's
        ref = transformers.SwinForImageClassification(transformers.SwinConfig(num_labels=1000))
    else:
        ref = transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(
            hidden_size=192, num_attention_heads=3, intermediate_size=768, num_labels=1000))
    ref = _randomised(ref, torch)
    folder = str(tmp_path / "hf")
    ref.save_pretrained(folder)
    x = _images(224)
    _assert_same(folder, name, x, _torch_logits(torch, ref, x))


@pytest.mark.slow
def test_swin_training_paths_agree():
    """Rematerialised blocks and the spelled-out attention (taken with attention dropout, with
    the bias and mask added to the logits) give the fused forward's loss and gradients."""
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    model = models.create(SWIN_T, 5, embed_dim=8, depths=(2, 2), num_heads=(1, 2), window_size=4)
    params = model.init(jax.random.key(1), x)["params"]

    def grads(m):
        return jax.jit(jax.value_and_grad(lambda p: jnp.sum(m.apply(
            {"params": p}, x, train=True, rngs={"dropout": jax.random.key(2)}) ** 2)),
            compiler_options={"xla_backend_optimization_level": 0})(params)

    ref_loss, ref_grads = grads(model)
    for fields in ({"remat": True}, {"attention_dropout_rate": 1e-9}):
        loss, g = grads(model.clone(**fields))
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_grads), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_full_size_logits_equal_torchvision_swin_t(refs, tmp_path):
    torch, torchvision, _ = refs
    torch.manual_seed(0)
    ref = _randomised(torchvision.models.swin_t(), torch)
    path = _save_pth(torch, ref, str(tmp_path / "swin_t.pth"), "torchvision")
    x = _images(224)
    _assert_same(path, SWIN_T, x, _torch_logits(torch, ref, x))
