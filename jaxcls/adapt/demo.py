"""Source-only vs DANN on a shift built from the bundled digits: inverted digits (255 - x).

    python -m jaxcls.adapt.demo --out=runs/dann_demo --seeds=0,1 --num_epochs=10

Writes OUT/inverted_digits/{train,test}/<class>/*.png (the digits' own 80/20 split, inverted;
the target's train labels are never read), then per seed trains configs/default.py on the
labelled digits alone and with the inverted train images as DANN's target, and prints a
Markdown table of the accuracy on the digits' test split (source) and on its inverted copy
(target), both from the final checkpoint.
"""

import json
import os

import numpy as np
from absl import flags

from jaxcls import adapt, cli, defaults, evaluate, train
from jaxcls.data import sources

flags.DEFINE_string("out", "runs/dann_demo", "output folder (target images and runs)")
flags.DEFINE_string("seeds", "0,1", "comma-separated seeds")
flags.DEFINE_float("num_epochs", 10.0, "training epochs of every run")
flags.DEFINE_string("config", os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                                           "default.py"), "the recipe (a digits config)")


def write_inverted(config, root: str) -> str:
    """The digits at config.image_size, inverted, as an image folder with train/ and test/."""
    from PIL import Image

    ds = sources.digits(config.image_size, config.holdout_fraction, config.seed)
    for split, source in (("train", ds.train), ("test", ds.eval)):
        for i in range(len(source)):
            ex = source[i]
            folder = os.path.join(root, split, str(int(ex["label"])))
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{i}.png")
            if not os.path.exists(path):
                Image.fromarray(255 - ex["image"]).save(path)
    return root


def accuracy(workdir: str, source) -> float:
    """Top-1 of the final checkpoint of `workdir` on `source`."""
    run = evaluate.load_run(workdir, "last")
    out = evaluate.predict_source(run, source)
    return float(np.mean(out["log_probs"].argmax(-1) == out["labels"]))


def main(argv):
    del argv
    f = flags.FLAGS
    base = defaults.load_config(f.config)
    base.num_epochs = f.num_epochs
    target = write_inverted(base, os.path.join(os.path.abspath(f.out), "inverted_digits"))
    source_test = sources.create(base).eval
    with_target = base.copy_and_resolve_references()
    with_target.domain_adaptation.target = f"folder:{target}"
    target_test = sources.create(adapt.target_config(with_target)).eval
    rows = []
    for seed in (int(s) for s in f.seeds.split(",")):
        for method in ("source only", "DANN"):
            config = (with_target if method == "DANN" else base).copy_and_resolve_references()
            config.seed = seed
            workdir = os.path.join(f.out, f"{method.split()[0].lower()}_s{seed}")
            summary = train.run(config, workdir)
            rows.append({"method": method, "seed": seed,
                         "source": accuracy(workdir, source_test),
                         "target": accuracy(workdir, target_test),
                         "wall_s": summary["wall_s"]})
            print(json.dumps(rows[-1]), flush=True)
    print("| method | seed | digits test top-1 | inverted digits test top-1 | wall |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {100 * r['source']:.1f}% | "
              f"{100 * r['target']:.1f}% | {r['wall_s']:.0f} s |")



if __name__ == "__main__":
    cli.run(main)
