"""Converts pretrained weights into a jaxcls checkpoint that configs start from.

    python -m jaxcls.weights convert SRC DST --model=resnet50 [--num_classes=N] [--layout=auto]

SRC: a Hugging Face folder, .safetensors, .pth/.pt/.bin (read with weights_only=True) or a
big_vision .npz. DST: a folder for `config.init_from=DST`. Prints one JSON line.
"""

import json

import jax
from absl import app, flags

from jaxcls import cli, weights, writers

flags.DEFINE_string("model", None, "Registered model name (python -m jaxcls.models).")
flags.DEFINE_integer("num_classes", None, "New head size (default: the checkpoint's).")
flags.DEFINE_integer("image_size", None, "ViT resolution (default: the checkpoint's).")
flags.DEFINE_string("layout", "auto", "auto | hf | timm | torchvision | big_vision | jaxcls")
flags.mark_flags_as_required(["model"])


def main(argv):
    if len(argv) != 4 or argv[1] != "convert":
        raise app.UsageError("usage: python -m jaxcls.weights convert SRC DST --model=NAME")
    writers.quiet_libraries()
    src, dst = argv[2], argv[3]
    f = flags.FLAGS
    ckpt = weights.read(src, f.model, f.layout)
    model, variables = weights.build(ckpt, f.model, f.num_classes, f.image_size)
    weights.save(dst, f.model, variables, ckpt)
    n = sum(x.size for x in jax.tree.leaves(variables["params"]))
    print(json.dumps({"model": f.model, "source_layout": ckpt.layout, "destination": dst,
                      "num_classes": model.num_classes, "params": int(n),
                      "preprocessing": ckpt.preprocessing}), flush=True)


if __name__ == "__main__":
    cli.run(main)
