"""python -m jaxcls.zeroshot --weights=PATH --dataset=SPEC [--templates=cifar10|imagenet|FILE]
[--classes=a,b,c] [--out_dir=D]: see jaxcls/clip/zeroshot.py.

Writes OUT_DIR/eval/<split>/ (metrics.json with `method`: templates, the names the prompts
used, logit_scale), predictions.npz, report.html, and OUT_DIR/class_vectors.npy (the zero-shot
classifier, [embed_dim, classes]).
"""

import os

from absl import app, flags

from jaxcls import cli, writers
from jaxcls.clip import zeroshot


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    name = os.path.splitext(os.path.basename(os.path.normpath(f.weights)))[0]
    out_dir = f.out_dir or os.path.join("runs", f"zeroshot_{name}")
    quick_gelu = {"auto": None, "true": True, "false": False}[f.quick_gelu]
    r = zeroshot.run(f.weights, f.dataset, out_dir, f.templates, f.classes, f.split,
                     f.batch_size, f.layout, quick_gelu, f.tta, f.num_threads)
    print(f"CLIP zero-shot ({f.templates} templates): {r['split']} top-1 {r['accuracy']:.4f} "
          f"({r['examples']} examples); wrote {out_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("weights", None, "CLIP weights: an OpenAI/open_clip state dict (.pt, "
                        ".pth, .bin, .safetensors) or a Hugging Face CLIPModel folder")
    flags.DEFINE_string("dataset", None, "a config.dataset spec (folder:PATH, tfds:NAME, ...)")
    flags.DEFINE_string("templates", "cifar10", "prompt ensemble: cifar10 (CLIP's 18), imagenet "
                        "(CLIP's 80) or a file with one template per line, {} for the class")
    flags.DEFINE_string("classes", None, "class names for the prompts, comma-separated in the "
                        "dataset's class order (default: its folder names, _ as space)")
    flags.DEFINE_enum("split", "test", ["test", "val"], "the split to classify")
    flags.DEFINE_string("out_dir", None, "default: runs/zeroshot_<weights name>")
    flags.DEFINE_integer("batch_size", 256, "images (and prompts) per batch, over all devices")
    flags.DEFINE_enum("layout", "auto", ["auto", "openai", "hf"], "the weights' key layout")
    flags.DEFINE_enum("quick_gelu", "auto", ["auto", "true", "false"], "auto: a Hugging Face "
                      "config.json's hidden_act, else QuickGELU (OpenAI's weights); false for "
                      "open_clip models trained with GELU")
    flags.DEFINE_string("tta", "", "test-time augmentation, as jaxcls.evaluate --tta")
    flags.DEFINE_integer("num_threads", 4, "image decoding threads")
    flags.mark_flags_as_required(["weights", "dataset"])
    cli.run(main)
