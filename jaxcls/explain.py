"""Why a model predicts what it does: Grad-CAM, Grad-CAM++, attention rollout, integrated
gradients, LIME.

    python -m jaxcls.explain --workdir=W IMAGE_OR_DIR ... --method=gradcam --out=DIR \
        [--layer=stage4_block2] [--class=3] [--checkpoint=last|best|STEP]

For each image (<name>: its path below the images' common folder, e.g. cat_0001),
DIR/<name>_<method>.png shows, under a title (class, probability, method), the image as the
model saw it (the run's eval preprocessing) beside the heat map blended over it, with a colour
bar of the map's values; DIR/<name>_<method>.npy is the map itself at
its own resolution, unnormalised: the layer's grid (Grad-CAM, Grad-CAM++), the patch grid
(rollout) or pixels (integrated gradients: attribution summed over the colour channels;
LIME: each pixel its superpixel's weight).

- `gradcam`, `gradcam++` (CNNs, Swin): class-score gradients at a layer chosen by module path
  (default: the last top-level module with a spatial output, the last block of the last stage,
  or the final LayerNorm on the map where a model has one: timm's rw CoAtNets, and Swin's
  `norm`, whose output is the last stage's map [N, h, w, C]). The
  gradient with respect to the layer's output is taken by adding a zero "probe" to that output
  through `nn.intercept_methods`: d score / d probe = d score / d activation, no model edits.
- `rollout` (ViT, DeiT): Abnar & Zuidema (2020), the product over blocks of the head-averaged
  attention weights with the residual as identity, 0.5 A + 0.5 I; the map is the class token's
  row (or, with pool="gap", the mean row) over the patch tokens.
- `integrated_gradients` (any model): Sundararajan et al. (2017), the straight path from a
  baseline (black image, or the dataset mean) to the image, trapezoid rule over `steps`
  intervals; attributions sum to score(image) - score(baseline) up to the quadrature error.
- `lime` (any model): Ribeiro et al. (2016), a weighted linear surrogate of the class
  probability over `--samples` random on/off patterns of `--segments` SLIC superpixels, the
  off ones at the baseline colour (jaxcls.lime); the masked images are predicted in jitted
  batches. Scores here are probabilities, as in the lime package.

Scores are logits (before the softmax) of the requested class, by default the predicted one.
Printed probabilities are calibrated as jaxcls.predict's: softmax(logits / T) with the
temperature jaxcls.evaluate stored for the checkpoint (T = 1, with a warning, when none is).
"""

import os
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging
from PIL import Image

from jaxcls import calibration, cli, evaluate, lime, writers
from jaxcls.data import augment, folders
from jaxcls.data.images import load_image
from jaxcls.models import vit

METHODS = ("gradcam", "gradcam++", "rollout", "integrated_gradients", "lime")


def methods_for(model: nn.Module) -> tuple[str, ...]:
    """The methods that apply to `model`: attention rollout for ViTs (DeiTs too), Grad-CAM for
    the rest (Swin: its default layer is the final norm's map, see `default_layer`)."""
    if isinstance(model, vit.ViT):
        return ("rollout", "integrated_gradients", "lime")
    return ("gradcam", "gradcam++", "integrated_gradients", "lime")


def _module_path(module: nn.Module) -> str:
    return "/".join(module.path)


def spatial_layers(model: nn.Module, variables, image_shape: Sequence[int]) -> list[str]:
    """Module paths (e.g. 'stage4_block2', 'stage4_block2/Conv_1') whose output is a feature map
    [N, h, w, C], in call order: the layers Grad-CAM can explain."""
    found = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = _module_path(context.module)
        if (context.method_name == "__call__" and path and getattr(out, "ndim", 0) == 4
                and path not in found):
            found.append(path)
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *image_shape)), train=False),
                       variables)
    return found


def default_layer(layers: Sequence[str]) -> str:
    """The last top-level module with a spatial output: the last block of the last stage."""
    top = [p for p in layers if "/" not in p]
    if not top:
        raise ValueError(f"no top-level module has a spatial output; layers: {list(layers)}")
    return top[-1]


def check_method(model: nn.Module, method: str) -> None:
    """Raises ValueError naming `method` and the methods that apply to `model`."""
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; use one of {METHODS}")
    allowed = methods_for(model)
    if method not in allowed:
        raise ValueError(f"method {method!r} does not apply to a {type(model).__name__}; "
                         f"for this model use one of {allowed}")


def _class_scores(logits: jax.Array, classes: jax.Array) -> jax.Array:
    """Sum over the batch of each example's logit for its class. In eval mode examples do not
    interact, so the gradient of this sum holds every example's own gradient."""
    return jnp.sum(jnp.take_along_axis(logits, classes[:, None], axis=1))


def layer_gradients(model: nn.Module, variables, images: jax.Array, layer: str,
                    classes: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(activation, d class score / d activation) at module `layer`, both [N, h, w, C]."""

    def scores(probe):
        captured = []

        def add_probe(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and _module_path(context.module) == layer:
                out = out + probe if probe is not None else out
                captured.append(out)
            return out

        with nn.intercept_methods(add_probe):
            logits = model.apply(variables, images, train=False)
        if len(captured) != 1:
            raise ValueError(f"layer {layer!r} was called {len(captured)} times in a forward "
                             f"pass; Grad-CAM needs a module called exactly once")
        return _class_scores(logits, classes), captured[0]

    shape = jax.eval_shape(lambda: scores(None)[1])
    zeros = jnp.zeros(shape.shape, shape.dtype)
    grads, activation = jax.grad(scores, has_aux=True)(zeros)
    return activation, grads


def grad_cam(activation: jax.Array, grads: jax.Array) -> jax.Array:
    """Selvaraju et al. (2017): relu(sum_c mean_hw(dS/dA_c) A_c) -> [N, h, w]."""
    weights = jnp.mean(grads, axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(weights * activation, axis=-1))


def grad_cam_pp(activation: jax.Array, grads: jax.Array) -> jax.Array:
    """Chattopadhay et al. (2018), with the score passed through exp so that its higher
    derivatives are powers of the first: per-position weights
    alpha = g^2 / (2 g^2 + sum_hw(A) g^3), channel weight sum_hw(alpha relu(g)) -> [N, h, w].
    (The exp(S) factor on the gradient scales each map by a positive constant: left out.)"""
    g2, g3 = grads**2, grads**3
    denom = 2.0 * g2 + jnp.sum(activation, axis=(1, 2), keepdims=True) * g3
    alpha = jnp.where(denom != 0.0, g2 / jnp.where(denom != 0.0, denom, 1.0), 0.0)
    weights = jnp.sum(alpha * jax.nn.relu(grads), axis=(1, 2), keepdims=True)
    return jax.nn.relu(jnp.sum(weights * activation, axis=-1))


def integrated_gradients(model: nn.Module, variables, images: jax.Array, classes: jax.Array,
                         baseline: jax.Array, steps: int = 64) -> jax.Array:
    """Attributions [N, H, W, C] of each class score to each input value along the straight
    path from `baseline` (broadcastable to images) to `images`, trapezoid rule, `steps`
    intervals: sum(attributions) ~= score(images) - score(baseline)."""
    baseline = jnp.broadcast_to(baseline, images.shape).astype(images.dtype)
    alphas = jnp.linspace(0.0, 1.0, steps + 1)
    weights = jnp.full(steps + 1, 1.0 / steps).at[jnp.array([0, steps])].multiply(0.5)
    grad = jax.grad(lambda x: _class_scores(model.apply(variables, x, train=False), classes))

    def accumulate(total, alpha_weight):
        alpha, weight = alpha_weight
        return total + weight * grad(baseline + alpha * (images - baseline)), None

    # A scan keeps one path point's activations alive at a time, whatever `steps` is.
    total, _ = jax.lax.scan(accumulate, jnp.zeros_like(images), (alphas, weights))
    return (images - baseline) * total


def attention_weights(model: vit.ViT, variables, images: jax.Array) -> list[jax.Array]:
    """Each block's attention weights [N, heads, tokens, tokens], first block first (the ViT
    spells attention out and sows them when `intermediates` is mutable)."""
    _, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    return [state["intermediates"][f"block{i}"]["attn"]["attention_weights"][0]
            for i in range(model.depth)]


def rollout(weights: Sequence[jax.Array]) -> jax.Array:
    """Attention rollout [N, T, T] of per-block weights [N, heads, T, T]: the product, last block
    on the left, of 0.5 mean_heads(W) + 0.5 I. Every row sums to 1."""
    eye = jnp.eye(weights[0].shape[-1], dtype=jnp.float32)
    result = None
    for w in weights:
        a = 0.5 * jnp.mean(w.astype(jnp.float32), axis=1) + 0.5 * eye
        result = a if result is None else a @ result
    return result


def rollout_map(model: vit.ViT, rolled: jax.Array) -> jax.Array:
    """The patch-grid map [N, g, g] of a rollout: the class token's row (a distilled DeiT: the
    mean of the class and distillation tokens' rows, as its logits are the mean of their heads),
    or with pool="gap" (the output is the mean of all tokens) the mean row, over the patch
    tokens."""
    k = len(model.prefix_tokens)
    patches = jnp.mean(rolled[:, :k, k:] if k else rolled, axis=1)
    g = round(patches.shape[-1] ** 0.5)
    return patches.reshape(-1, g, g)


def make_explainer(model: nn.Module, method: str, layer: str | None = None, steps: int = 64,
                   samples: int = 1000, segments: int = 50) -> Callable:
    """A fn(variables, images, target, baseline) -> {"map": [N, h, w], "logits",
    "classes"}: `target` [N] int, -1 for the predicted class (-2: a padding row, which LIME
    leaves at zero); `baseline` [1, 1, 1, 3] only for integrated gradients and LIME. Grad-CAM
    needs `layer` (a path from `spatial_layers`). Jitted whole, except LIME (jitted batches
    of masked images, superpixels and the surrogate on the host)."""
    check_method(model, method)
    if method in ("gradcam", "gradcam++") and layer is None:
        raise ValueError(f"{method} needs a layer: one of spatial_layers(...)")
    if method == "lime":
        return _lime_explainer(model, samples, segments)

    def explain(variables, images, target, baseline):
        logits = model.apply(variables, images, train=False)
        classes = jnp.where(target >= 0, target, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
        if method in ("gradcam", "gradcam++"):
            activation, grads = layer_gradients(model, variables, images, layer, classes)
            heat = (grad_cam if method == "gradcam" else grad_cam_pp)(activation, grads)
        elif method == "rollout":
            heat = rollout_map(model, rollout(attention_weights(model, variables, images)))
        else:
            heat = jnp.sum(integrated_gradients(model, variables, images, classes, baseline,
                                                steps), axis=-1)
        return {"map": heat, "logits": logits, "classes": classes}

    return jax.jit(explain)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, size: int = 0
            ) -> np.ndarray:
    """uint8 [H, W, 3] image with `heat` [h, w] (resized bilinearly, |heat| scaled to [0, 1] by
    its maximum) blended over it in matplotlib's 'jet' colours, `alpha` the map's opacity; with
    `size` > H, both enlarged to size x size first (bicubic), so small images stay legible."""
    from matplotlib import colormaps

    if size > image.shape[0]:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    h, w = image.shape[:2]
    heat = np.abs(np.asarray(heat, np.float32))
    resized = np.asarray(Image.fromarray(heat, mode="F").resize((w, h), Image.BILINEAR))
    top = resized.max()
    scaled = resized / top if top > 0 else resized
    colours = colormaps["jet"](scaled)[..., :3] * 255.0
    return np.round((1 - alpha) * image + alpha * colours).clip(0, 255).astype(np.uint8)


# Layout of `panel`, in pixels: margins, title band, colour bar and its tick labels.
PANEL_PAD, PANEL_TITLE, PANEL_BAR, PANEL_TICKS = 6, 30, 12, 44


def panel(image: np.ndarray, heat: np.ndarray, title: str, alpha: float = 0.5,
          size: int = 224) -> np.ndarray:
    """The explanation PNG as uint8 [H, W, 3]: `title` on top, then side by side the image
    (enlarged to size x size, bicubic) and `overlay(image, heat, alpha, size)`, both placed
    pixel for pixel, and a colour bar of |heat| from 0 to its maximum in the overlay's colours."""
    from matplotlib import colormaps, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.figure import Figure

    blended = overlay(image, heat, alpha, size)
    if size > image.shape[0]:
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    s = blended.shape[0]
    pad, top, bar, ticks = PANEL_PAD, PANEL_TITLE, PANEL_BAR, PANEL_TICKS
    width, height = 3 * pad + 2 * s + pad + bar + ticks, top + s + pad
    fig = Figure(figsize=(width / 100, height / 100), dpi=100, facecolor="white")
    fig.figimage(image, pad, pad)  # pixel offsets from the bottom left, no resampling
    fig.figimage(blended, 2 * pad + s, pad)
    cax = fig.add_axes(((3 * pad + 2 * s) / width, pad / height, bar / width, s / height))
    vmax = float(np.abs(np.asarray(heat)).max()) or 1.0
    ColorbarBase(cax, cmap=colormaps["jet"], norm=colors.Normalize(0.0, vmax))
    cax.tick_params(labelsize=7)
    cax.set_title("|map|", fontsize=7)  # the overlay colours |heat| (signed maps: their size)
    fig.text(pad / width, 1 - 4 / height, title, ha="left", va="top", fontsize=8, wrap=True)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def panel_title(record: dict, method: str) -> str:
    """"cat 0.583 (gradcam)", or, when the explained class is not the predicted one,
    "map of dog 0.210 (gradcam); predicted cat 0.583"."""
    explained = f"{record['class']} {record['class_probability']:.3f} ({method})"
    if record["class"] == record["predicted"]:
        return explained
    return f"map of {explained}; predicted {record['predicted']} {record['probability']:.3f}"


# ---- the command line ------------------------------------------------------------------------


def image_paths(args: Sequence[str]) -> list[str]:
    """Files as given, and each directory's image files (`folders.image_files`: sorted,
    recursive, hidden entries skipped, symlinks followed, extensions in any case)."""
    paths = []
    for arg in args:
        if os.path.isdir(arg):
            paths += folders.image_files(arg)
        elif os.path.exists(arg):
            paths.append(arg)
        else:
            raise FileNotFoundError(f"image {arg!r} does not exist")
    if not paths:
        raise ValueError(f"no image files in {list(args)}")
    names = output_names(paths)
    clashes = sorted({p for p, n in zip(paths, names, strict=True) if names.count(n) > 1})
    if clashes:
        raise ValueError(f"images whose outputs would overwrite each other: {clashes}")
    return paths


def output_names(paths: Sequence[str]) -> list[str]:
    """Each path relative to the paths' common folder, without extension, folders joined by
    '_': .../test/cat/0001.jpg and .../test/dog/0001.jpg -> cat_0001, dog_0001."""
    common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    return [os.path.splitext(os.path.relpath(os.path.abspath(p), common))[0].replace(os.sep, "_")
            for p in paths]


def parse_class(value: str | None, class_names: Sequence[str]) -> int:
    """--class as an index or a class name -> index; None -> -1 (the predicted class)."""
    if value is None or value == "":
        return -1
    if value in class_names:
        return list(class_names).index(value)
    if value.lstrip("-").isdigit() and 0 <= int(value) < len(class_names):
        return int(value)
    raise ValueError(f"--class={value!r} is neither a class name nor an index below "
                     f"{len(class_names)}; classes: {list(class_names)}")


def _lime_explainer(model: nn.Module, samples: int, segments: int) -> Callable:
    logits_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))

    def explain(variables, images, target, baseline):
        logits = np.asarray(jax.device_get(logits_fn(variables, images)))
        target = np.asarray(target)
        classes = np.where(target >= 0, target, np.argmax(logits, axis=-1)).astype(np.int32)
        probs_fn = lambda x: jax.nn.softmax(logits_fn(variables, x))  # noqa: E731
        heat = np.zeros(images.shape[:3], np.float32)
        for i in np.flatnonzero(target >= -1):
            heat[i] = lime.explain_image(probs_fn, images[i], int(classes[i]), baseline[0],
                                         samples, segments)["map"]
        return {"map": heat, "logits": logits, "classes": classes}

    return explain


def explainable_model(model: nn.Module) -> nn.Module:
    """`model` computing in float32 (gradients of bf16 activations are too coarse for maps) and
    without remat (same outputs; nothing to save in a forward pass)."""
    fields = {"dtype": jnp.float32}
    if hasattr(model, "remat"):
        fields["remat"] = False
    return model.clone(**fields)


def explain_files(run, paths: Sequence[str], method: str, out_dir: str, layer: str | None = None,
                  target: int = -1, steps: int = 64, baseline: str = "black",
                  alpha: float = 0.5, png_size: int = 224, batch_size: int = 16,
                  samples: int = 1000, segments: int = 50, ema: bool = False) -> list[dict]:
    """Explains each image file (or folder of them) with `run` (an evaluate.Run); writes
    DIR/<name>_<method>.png and .npy (names from `output_names`); returns one record per
    explained image (path, predicted and explained class, probabilities, outputs). Unreadable
    files are skipped with a warning."""
    paths = image_paths(paths)
    config, names = run.config, run.class_names
    model = explainable_model(run.model)
    check_method(model, method)
    size = config.image_size
    if layer is not None and method not in ("gradcam", "gradcam++"):
        raise ValueError(f"--layer={layer!r} applies to gradcam and gradcam++, not {method}")
    if method in ("gradcam", "gradcam++"):
        layers = spatial_layers(model, run.variables, (size, size, 3))
        if layer is None:
            layer = default_layer(layers)
        elif layer not in layers:
            raise ValueError(f"--layer={layer!r} is not a module with a spatial output; valid "
                             f"module paths: {layers}")
    if baseline not in ("black", "mean"):
        raise ValueError(f"--baseline={baseline!r}: use black or mean")
    if not 0 <= target < len(names) and target != -1:
        raise ValueError(f"class {target} out of range for {len(names)} classes")
    # black: pixel value 0 through the run's normalisation; mean: 0 after it (the mean colour).
    base = (augment.normalize(jnp.zeros((1, 1, 1, 3), jnp.uint8), config.mean, config.std)
            if baseline == "black" else jnp.zeros((1, 1, 1, 3)))
    explain = make_explainer(model, method, layer, steps, samples, segments)
    # As jaxcls.predict prints (`ema`: the run's parameters are its moving average).
    temperature = calibration.temperature_or_one(run.step_dir,
                                                 evaluate.calibration_key("", ema=ema))

    loaded = []
    for p, name in zip(paths, output_names(paths), strict=True):
        try:
            loaded.append((p, name, load_image(p, size, config.crop_frac)))
        except Exception as e:  # PIL raises many types on a non-image; all mean "skip it"
            logging.warning("skipping %s: not a readable image (%s)", p, e)
    os.makedirs(out_dir, exist_ok=True)
    records = []
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start:start + batch_size]
        pixels = np.zeros((batch_size, size, size, 3), np.uint8)  # fixed shape: one compile
        pixels[:len(chunk)] = [img for _, _, img in chunk]
        x = augment.normalize(jnp.asarray(pixels), config.mean, config.std)
        targets = np.where(np.arange(batch_size) < len(chunk), target, -2)  # -2: padding
        out = jax.device_get(explain(run.variables, x, jnp.asarray(targets), base))
        probs = np.exp(calibration.scaled_log_probs(out["logits"], temperature))
        for i, (path, name, img) in enumerate(chunk):
            stem = os.path.join(out_dir, f"{name}_{method}")
            np.save(stem + ".npy", out["map"][i])
            predicted, cls = int(np.argmax(out["logits"][i])), int(out["classes"][i])
            record = {"path": path, "predicted": names[predicted],
                      "probability": float(probs[i, predicted]), "class": names[cls],
                      "class_probability": float(probs[i, cls]), "temperature": temperature,
                      "png": stem + ".png", "npy": stem + ".npy"}
            Image.fromarray(panel(img, out["map"][i], panel_title(record, method), alpha,
                                  png_size)).save(stem + ".png")
            records.append(record)
            logging.info("%s: predicted %s (%.3f); %s map of %s -> %s.png", path,
                         names[predicted], probs[i, predicted], method, names[cls], stem)
    if not records:
        raise ValueError(f"none of {list(paths)} is a readable image")
    return records


def define_flags() -> None:
    """The command's flags (defined as its main runs, so importing this module defines none)."""
    evaluate.define_run_flags(ensemble=False, tta=False)
    flags.DEFINE_enum("method", "gradcam", list(METHODS), "explanation method")
    flags.DEFINE_string("out", None, "output directory for <image>_<method>.png and .npy")
    flags.DEFINE_string("layer", None, "gradcam/gradcam++: module path of the explained layer, "
                        "e.g. stage4_block2 (default: the last block of the last stage)")
    flags.DEFINE_string("class", None, "class to explain, index or name (default: the "
                        "predicted one)")
    flags.DEFINE_integer("steps", 64, "integrated_gradients: intervals of the path integral")
    flags.DEFINE_enum("baseline", "black", ["black", "mean"], "integrated_gradients and lime: "
                      "black image, or the mean colour (0 after normalising)")
    flags.DEFINE_integer("samples", 1000, "lime: random superpixel patterns per image")
    flags.DEFINE_integer("segments", 50, "lime: about this many SLIC superpixels per image")
    flags.DEFINE_float("alpha", 0.5, "opacity of the heat map over the image")
    flags.DEFINE_integer("png_size", 224, "smaller images are enlarged to this side in the PNG")
    flags.DEFINE_integer("batch_size", 16, "images explained at once")
    flags.mark_flags_as_required(["out"])


def main(argv):
    f = flags.FLAGS
    writers.quiet_libraries()
    image_paths(argv[1:])  # a missing file fails before the run is loaded
    run = evaluate.load_run(f.workdir, f.checkpoint, f.ema)
    explain_files(run, argv[1:], f.method, f.out, f.layer, parse_class(f["class"].value,
                                                                    run.class_names),
                  f.steps, f.baseline, f.alpha, f.png_size, f.batch_size, f.samples,
                  f.segments, f.ema)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
