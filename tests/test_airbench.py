"""airbench94's pieces: the whitening initialiser, the alternating flip, the reflect translate,
Nesterov SGD with decoupled decay (against torch), lookahead, the TTA views, the network, Muon."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxcls import defaults, optim, train
from jaxcls.data import augment, tta
from jaxcls.models import airbench, whitening


def _correlated_images(n: int = 64, size: int = 12, seed: int = 0) -> np.ndarray:
    """Normalised-looking images with correlated neighbours and channels (like photos)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size + 1, size + 1, 3))
    x = (x[:, 1:, 1:] + x[:, :-1, 1:] + x[:, 1:, :-1]) / 3  # neighbours correlate
    return x @ np.array([[1.0, 0.6, 0.3], [0.0, 0.8, 0.4], [0.0, 0.0, 0.5]])  # channels too


def test_whitening_kernel_gives_identity_patch_covariance():
    images = _correlated_images()
    conv = nn.Conv(24, (2, 2), padding="VALID")  # the model's whitening conv, bias 0

    def responses(kernel):
        out = conv.apply({"params": {"kernel": kernel, "bias": np.zeros(24, np.float32)}},
                         images.astype(np.float32))
        return np.asarray(out, np.float64).reshape(-1, 24)

    # eps 0: the first 12 filters' responses have identity second moments exactly; the other
    # 12 are their negatives.
    flat = responses(whitening.whitening_kernel(images, 2, eps=0.0))
    np.testing.assert_allclose(flat[:, :12].T @ flat[:, :12] / len(flat), np.eye(12),
                               atol=2e-5)
    np.testing.assert_allclose(flat[:, 12:], -flat[:, :12], atol=1e-5)
    # airbench's eps 5e-4 shrinks direction i to lambda_i / (lambda_i + eps), largest first.
    kernel = whitening.whitening_kernel(images, 2, eps=5e-4)
    assert kernel.shape == (2, 2, 3, 24)
    flat = responses(kernel)[:, :12]
    raw = whitening.patches(images, 2).reshape(-1, 12)
    lam = np.sort(np.linalg.eigvalsh(raw.T @ raw / len(raw)))[::-1]
    np.testing.assert_allclose(flat.T @ flat / len(flat), np.diag(lam / (lam + 5e-4)), atol=2e-5)
    # Without whitening the patches are far from it (the check has teeth).
    assert np.abs(raw.T @ raw / len(raw) - np.eye(12)).max() > 0.3


def test_whitening_init_sets_the_model_kernel_from_the_training_images():
    config = defaults.load_config("configs/cifar10_airbench.py")
    config.whiten_init_images = 8
    params = {"whiten": {"kernel": jnp.zeros((2, 2, 3, 24)), "bias": jnp.zeros(24)},
              "head": {"kernel": jnp.ones((4, 10))}}
    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), np.uint8)

    class Source:  # any source: examples by index
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return {"image": images[i]}

    new = train.whitened_params(config, params, Source())
    idx = np.sort(np.random.default_rng(config.seed).choice(20, 8, replace=False))
    x = np.asarray(augment.normalize(images[idx], config.mean, config.std))
    np.testing.assert_allclose(new["whiten"]["kernel"], whitening.whitening_kernel(x, 2),
                               rtol=1e-6)
    np.testing.assert_array_equal(new["head"]["kernel"], params["head"]["kernel"])
    config.whiten_init = "head/kernel"
    with pytest.raises(ValueError, match="whitening kernel"):
        train.whitened_params(config, params, Source())


def _flipped(out: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Per example: True where `out` is the mirror of `images`, False where it is unchanged."""
    same = (out == images).all(axis=(1, 2, 3))
    mirrored = (out == images[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same ^ mirrored).all()
    return mirrored


def test_flip_alternate_mirrors_each_image_in_every_other_epoch():
    pipeline = augment.Pipeline(augment.parse("flip_alternate"), (0.0,) * 3, (1 / 255,) * 3)
    n = 512
    images = np.random.default_rng(0).integers(0, 256, (n, 4, 4, 3), np.uint8)
    index = jnp.arange(n)
    apply = jax.jit(lambda rng, epoch: augment.apply(
        pipeline, rng, images, jnp.zeros(n, jnp.int32), 2,
        context={"index": index, "epoch": jnp.full(n, epoch, jnp.int32)})[0])
    flips = [_flipped(np.asarray(apply(jax.random.key(e), e)).round().astype(np.uint8), images)
             for e in range(6)]
    first = flips[0]
    assert 0.4 < first.mean() < 0.6  # a fair coin per image in the first epoch
    for e, f in enumerate(flips):
        np.testing.assert_array_equal(f, first ^ (e % 2 == 1))  # exact alternation, any rng


def test_augment_context_counts_epochs_by_position_in_the_stream():
    batch = {"index": np.array([7, 3, 9, 0])}
    epochs = [train.augment_context(batch, step, 4, 10)["epoch"].tolist() for step in range(6)]
    # positions 0-3, 4-7, 8-11, ...: 10 examples an epoch
    assert epochs == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1],
                      [2, 2, 2, 2]]
    assert train.augment_context(batch, 0, 4, 10)["index"].tolist() == [7, 3, 9, 0]


def test_reflect_translate_is_numpy_reflect_pad_and_crop():
    pipeline = augment.Pipeline(augment.parse("crop(2, padding_mode='reflect')"), (0.0,) * 3,
                                (1 / 255,) * 3)
    n = 200
    images = np.random.default_rng(1).integers(0, 256, (n, 8, 8, 3), np.uint8)
    out = np.asarray(jax.jit(lambda r: augment.apply(pipeline, r, images, jnp.zeros(n, int),
                                                     2)[0])(jax.random.key(0)))
    out = out.round().astype(np.uint8)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    seen = set()
    for i in range(n):
        matches = [(y, x) for y in range(5) for x in range(5)
                   if (padded[i, y:y + 8, x:x + 8] == out[i]).all()]
        assert matches, i
        seen.update(matches)
    assert len(seen) == 25  # every shift in -2..2 x -2..2 occurs


def test_nesterov_decoupled_decay_matches_torch_sgd_param_groups():
    """airbench's optimizer: torch SGD(nesterov) with param groups lr = base x multiplier and
    weight_decay = wd / lr, under a schedule scaling each group's lr."""
    config = defaults.get_config()
    config.update(optimizer="sgd", momentum=0.85, nesterov=True, learning_rate=0.3,
                  weight_decay=0.02, decoupled_decay=True, decay_all=True,
                  lr_multipliers=(("b", 64.0),), schedule="piecewise_linear",
                  schedule_points=((0.0, 0.2), (0.3, 1.0), (1.0, 0.07)))
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(3, 4)).astype(np.float32),
              "b": rng.normal(size=(4,)).astype(np.float32)}
    total = 10
    schedule = optim.create_schedule(config, 1, total)
    tx = optim.create_optimizer(config, schedule, params, 1)
    a = rng.normal(size=(5, 3)).astype(np.float32)
    target = rng.normal(size=(5, 4)).astype(np.float32)

    def loss(p):
        return jnp.sum((jnp.asarray(a) @ p["w"] + p["b"] - target) ** 2)

    tw, tb = (torch.tensor(params[k], requires_grad=True) for k in ("w", "b"))
    base = config.learning_rate
    groups = [{"params": [tw], "lr": base, "weight_decay": config.weight_decay / base},
              {"params": [tb], "lr": 64 * base, "weight_decay": config.weight_decay / (64 * base)}]
    opt = torch.optim.SGD(groups, momentum=0.85, nesterov=True)
    initial = [g["lr"] for g in opt.param_groups]
    p, state = {k: jnp.asarray(v) for k, v in params.items()}, tx.init(params)
    points = np.array(config.schedule_points)
    for step in range(total):
        grads = jax.grad(loss)(p)
        updates, state = tx.update(grads, state, p)
        p = jax.tree.map(jnp.add, p, updates)
        factor = np.interp(step, points[:, 0] * total, points[:, 1])
        for g, lr in zip(opt.param_groups, initial, strict=True):
            g["lr"] = lr * factor
        opt.zero_grad()
        torch.sum((torch.tensor(a) @ tw + tb - torch.tensor(target)) ** 2).backward()
        opt.step()
        np.testing.assert_allclose(p["w"], tw.detach().numpy(), rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(p["b"], tb.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_freeze_epochs_stops_a_parameter_at_its_step():
    config = defaults.get_config()
    config.update(optimizer="sgd", momentum=0.9, learning_rate=0.1, schedule="constant",
                  freeze_epochs=(("b", 2),))
    params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
    tx = optim.create_optimizer(config, optim.create_schedule(config, 1, 10), params, 1)
    state, history = tx.init(params), []
    for _ in range(4):
        updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        history.append((float(jnp.abs(updates["w"]).sum()), float(jnp.abs(updates["b"]).sum())))
    assert all(w > 0 for w, _ in history)
    assert [b > 0 for _, b in history] == [True, True, False, False]


def test_lookahead_follows_airbench_schedule():
    total, every = 12, 5
    base, power = 0.95**5, 3.0
    np.testing.assert_allclose(optim.lookahead_decay(jnp.arange(total + 1), total, base, power),
                               [*(base * (np.arange(total) / total) ** power), 1.0], rtol=1e-6)
    # Reference: airbench's loop, slow.lerp_(fast, 1 - decay); fast.copy_(slow) every 5 steps
    # and at the end with decay 1.
    rng = np.random.default_rng(0)
    deltas = rng.normal(size=(total, 3)).astype(np.float32)
    fast_ref = slow_ref = np.zeros(3, np.float32)
    fast, slow = jnp.zeros(3), jnp.zeros(3)
    sync = jax.jit(optim.lookahead_sync, static_argnums=(3, 4, 5, 6))
    for t in range(1, total + 1):
        fast_ref = fast_ref + deltas[t - 1]
        if t % every == 0:
            decay = base * (t / total) ** power
            slow_ref = slow_ref + (1 - decay) * (fast_ref - slow_ref)
            fast_ref = slow_ref
        if t >= total:
            fast_ref = slow_ref
        fast, slow = sync(fast + deltas[t - 1], slow, t, total, every, base, power)
        np.testing.assert_allclose(fast, fast_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slow, slow_ref, rtol=1e-5, atol=1e-6)


def test_tta_translate_flip_views_and_airbench_weights():
    images = np.random.default_rng(0).integers(0, 256, (3, 6, 6, 3), np.uint8)
    spec = "translate(1)|flip"
    views = np.asarray(tta.tta_views(jnp.asarray(images), spec))
    weights = np.asarray(tta.view_weights(spec))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    shifted = [images, padded[:, 0:6, 0:6], padded[:, 2:8, 2:8]]
    expected = shifted + [v[:, :, ::-1] for v in shifted]
    np.testing.assert_array_equal(views, np.stack(expected))
    # airbench: 0.5 mirror(x) + 0.5 mean(mirror(up-left), mirror(down-right)) on the logits.
    w = np.random.default_rng(1).normal(size=(6 * 6 * 3, 4))

    def net(x):
        return x.reshape(len(x), -1).astype(np.float64) @ w

    def mirror(x):
        return 0.5 * net(x) + 0.5 * net(x[:, :, ::-1])

    airbench_logits = 0.5 * mirror(shifted[0]) + 0.25 * (mirror(shifted[1]) + mirror(shifted[2]))
    ours = np.einsum("v,vnc->nc", weights, np.stack([net(v) for v in views]))
    np.testing.assert_allclose(ours, airbench_logits, rtol=1e-10)
    with pytest.raises(ValueError, match="translate"):
        tta.parse("translate(0)")


def test_airbench_network_init_and_shapes():
    shapes = jax.eval_shape(lambda: airbench.AirbenchNet().init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == 1_971_640
    model = airbench.AirbenchNet(widths=(32, 16, 16))  # small, same structure
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    params = variables["params"]
    k = np.asarray(params["group1"]["conv2"]["kernel"])  # 32 -> 32: all Dirac (identity)
    np.testing.assert_array_equal(k[1, 1], np.eye(32))
    assert not k[0].any() and not k[2].any()
    k1 = np.asarray(params["group2"]["conv1"]["kernel"])  # 32 -> 16: Dirac on all 16
    np.testing.assert_array_equal(k1[1, 1], np.eye(32, 16))
    k0 = np.asarray(params["group1"]["conv1"]["kernel"])  # 24 -> 32: the first 24 Dirac,
    np.testing.assert_array_equal(k0[1, 1, :, :24], np.eye(24))  # the rest torch's uniform
    assert np.abs(k0[..., 24:]).max() <= 1 / np.sqrt(9 * 24) and k0[..., 24:].std() > 0
    assert set(params["group1"]["norm1"]) == {"bias"}  # BatchNorm scale frozen at 1: absent
    assert "bias" not in params["head"]
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    # The head's output is scaled by 1/9.
    logits, unscaled = jax.jit(lambda v: (model.apply(v, x), model.clone(
        logit_scale=1.0).apply(v, x)))(variables)
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(logits, unscaled / 9, rtol=1e-5, atol=1e-7)


def _newton_schulz_reference(g: np.ndarray, steps: int) -> np.ndarray:
    """airbench's zeropower_via_newtonschulz5 (in float32) on g [O, rest]."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g / (np.linalg.norm(g) + 1e-7)
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_matches_airbench_and_sgd_trains_the_rest():
    config = defaults.load_config("configs/cifar10_airbench_muon.py")
    rng = np.random.default_rng(0)
    params = {"conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 8, 16)), jnp.float32)},
              "head": {"kernel": jnp.asarray(rng.normal(size=(16, 10)), jnp.float32)}}
    config.update(lr_multipliers=(), wd_multipliers=(), weight_decay=0.0, freeze_epochs=())
    tx = optim.create_optimizer(config, lambda n: 1.0, params, 1)
    state = tx.init(params)
    k = np.asarray(params["conv"]["kernel"])
    renorm = k * (4.0 / np.linalg.norm(k) - 1.0)  # to norm sqrt(16 output channels), each step
    buf = 0.0
    for _ in range(3):
        grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32),
                             params)
        updates, state = tx.update(grads, state, params)
        # airbench: buf = 0.6 buf + g; g + 0.6 buf (Nesterov) as [O, H*W*I], orthogonalised.
        g = np.asarray(grads["conv"]["kernel"])
        buf = 0.6 * buf + g
        step = _newton_schulz_reference((g + 0.6 * buf).reshape(-1, 16).T, 3).T
        np.testing.assert_allclose(np.asarray(updates["conv"]["kernel"]) - renorm,
                                   -step.reshape(k.shape), atol=2e-5)
    singular = np.linalg.svd(step, compute_uv=False)
    assert 0.3 < singular.min() and singular.max() < 1.3  # about orthogonal after 3 steps
    # The head: Nesterov SGD, first step -(1 + momentum) g.
    tx = optim.create_optimizer(config, lambda n: 1.0, params, 1)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["kernel"],
                               -(1 + config.momentum) * grads["head"]["kernel"], rtol=1e-5)


@pytest.mark.slow
def test_airbench_recipe_trains_end_to_end(tmp_path):
    """The recipe through train.run (digits, narrower groups, 3 epochs): whitening init from
    the training images, frozen kernel, lookahead ending on the slow weights, TTA eval."""
    config = defaults.load_config("configs/cifar10_airbench.py")
    config.update(dataset="digits", batch_size=128, whiten_init_images=256, num_steps=33,
                  num_epochs=None, log_every_steps=11, num_threads=1)
    config.model_kwargs.widths = (16, 32, 32)
    summary = train.run(config, str(tmp_path))
    assert summary["steps"] == 33
    assert summary["final_eval"]["accuracy"] > 0.8, summary["final_eval"]
