"""Source-only vs DANN on a shift built from the bundled digits.

    python -m jaxcls.adapt.demo --out=runs/dann_demo --shift=blend --weight=0.1 --seeds=0,1

Writes OUT/<shift>_digits/{train,test}/<class>/*.png, the digits' own 80/20 split shifted
(the target's train labels are never read), then per seed trains configs/default.py on the
labelled digits alone and with the shifted train images as DANN's target, and prints a
Markdown table of the accuracy on the digits' test split (source) and on its shifted copy
(target), both from the final checkpoint. Shifts:

- `blend`: MNIST-M's construction (Ganin et al. 2016): |patch - digit| per channel, the patch
  a random crop of one of scikit-learn's two bundled colour photographs (seeded per image);
- `invert`: 255 - x.
"""

import json
import os

import numpy as np
from absl import flags

from jaxcls import adapt, cli, defaults, evaluate, train
from jaxcls.data import sources

flags.DEFINE_string("out", "runs/dann_demo", "output folder (target images and runs)")
flags.DEFINE_string("seeds", "0,1", "comma-separated seeds")
flags.DEFINE_float("weight", 1.0, "config.domain_adaptation.weight of the DANN runs")
flags.DEFINE_enum("shift", "blend", ["blend", "invert"], "how the target domain differs")
flags.DEFINE_float("num_epochs", 10.0, "training epochs of every run")
flags.DEFINE_string("config", os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                                           "default.py"), "the recipe (a digits config)")


def shifted(image: np.ndarray, shift: str, rng: np.random.Generator, photos) -> np.ndarray:
    """uint8 HWC `image` in the target domain `shift` (see the module docstring)."""
    if shift == "invert":
        return 255 - image
    photo = photos[rng.integers(len(photos))]
    h, w = image.shape[:2]
    y, x = rng.integers(photo.shape[0] - h), rng.integers(photo.shape[1] - w)
    patch = photo[y:y + h, x:x + w].astype(np.int16)
    return np.abs(patch - image.astype(np.int16)).astype(np.uint8)


def write_target(config, root: str, shift: str) -> str:
    """The digits at config.image_size, shifted, as an image folder with train/ and test/."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    # The photos at a quarter size, so that a patch holds texture rather than one flat colour.
    photos = [np.asarray(Image.fromarray(p).resize((p.shape[1] // 4, p.shape[0] // 4)))
              for p in load_sample_images().images]
    rng = np.random.default_rng(0)
    ds = sources.digits(config.image_size, config.holdout_fraction, config.seed)
    for split, source in (("train", ds.train), ("test", ds.eval)):
        for i in range(len(source)):
            ex = source[i]
            folder = os.path.join(root, split, str(int(ex["label"])))
            os.makedirs(folder, exist_ok=True)
            image = shifted(ex["image"], shift, rng, photos)
            path = os.path.join(folder, f"{i}.png")
            if not os.path.exists(path):
                Image.fromarray(image).save(path)
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
    target = write_target(base, os.path.join(os.path.abspath(f.out), f"{f.shift}_digits"),
                          f.shift)
    source_test = sources.create(base).eval
    with_target = base.copy_and_resolve_references()
    with_target.domain_adaptation.target = f"folder:{target}"
    with_target.domain_adaptation.weight = f.weight
    target_test = sources.create(adapt.target_config(with_target)).eval
    rows = []
    for seed in (int(s) for s in f.seeds.split(",")):
        for method in ("source only", "DANN"):
            config = (with_target if method == "DANN" else base).copy_and_resolve_references()
            config.seed = seed
            # (source-only runs do not depend on the shift: one per seed serves every shift)
            name = (f"source_s{seed}" if method == "source only"
                    else f"dann_{f.shift}_w{f.weight:g}_s{seed}")
            workdir = os.path.join(f.out, name)
            summary = train.run(config, workdir)
            rows.append({"method": method, "seed": seed,
                         "source": accuracy(workdir, source_test),
                         "target": accuracy(workdir, target_test),
                         "wall_s": summary["wall_s"]})
            print(json.dumps(rows[-1]), flush=True)
    print(f"| method | seed | digits test top-1 | {f.shift} digits test top-1 | wall |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {100 * r['source']:.1f}% | "
              f"{100 * r['target']:.1f}% | {r['wall_s']:.0f} s |")



if __name__ == "__main__":
    cli.run(main)
