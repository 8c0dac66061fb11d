"""python -m jaxcls.classic --dataset=SPEC --features=hog --classifier=rbf_svm [--out_dir=D]:
see jaxcls/classic/baseline.py."""

import os

from absl import app, flags

from jaxcls import cli, writers
from jaxcls.classic import baseline, classifiers, features


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    writers.quiet_libraries()
    f = flags.FLAGS
    params = features.FeatureParams(f.hog_orientations, f.hog_pixels_per_cell,
                                    f.hog_cells_per_block, f.lbp_grid, f.color_bins)
    out_dir = f.out_dir or os.path.join("runs", f"classic_{f.features}_{f.classifier}")
    result = baseline.run(f.dataset, f.features, f.classifier, out_dir, f.image_size, f.split,
                          params, f.cv, f.cv_examples, f.seed, f.n_jobs or None,
                          f.exact_svm_max, f.nystroem_components)
    print(f"{f.features} + {f.classifier}: {result['split']} top-1 {result['accuracy']:.4f} "
          f"({result['examples']} examples); wrote {out_dir}")


if __name__ == "__main__":
    flags.DEFINE_string("dataset", "digits", "a config.dataset spec: digits, folder:PATH, "
                        "tfds:NAME")
    flags.DEFINE_integer("image_size", 32, "images are decoded to this square size")
    flags.DEFINE_enum("features", "hog", sorted(features.FEATURES), "the hand-made features")
    flags.DEFINE_enum("classifier", "rbf_svm", list(classifiers.NAMES), "the classifier")
    flags.DEFINE_enum("split", "test", ["test", "val"], "the split to evaluate")
    flags.DEFINE_string("out_dir", None, "default: runs/classic_<features>_<classifier>")
    flags.DEFINE_integer("cv", 3, "cross-validation folds of the hyperparameter search")
    flags.DEFINE_integer("cv_examples", 10000, "training examples the search uses (a seeded "
                         "sample); the best setting is then refitted on all of them")
    flags.DEFINE_integer("seed", 0, "seed of the splits, the CV sample and the classifiers")
    flags.DEFINE_integer("n_jobs", 0, "worker processes for features and CV (0: all cores)")
    flags.DEFINE_integer("exact_svm_max", 10000, "rbf_svm: exact SVC up to this many training "
                         "examples, else Nystroem + linear SVM")
    flags.DEFINE_integer("nystroem_components", 2000, "rbf_svm above exact_svm_max: kernel "
                         "landmarks")
    flags.DEFINE_integer("hog_orientations", 9, "hog: orientation bins")
    flags.DEFINE_integer("hog_pixels_per_cell", 8, "hog: cell side in pixels")
    flags.DEFINE_integer("hog_cells_per_block", 2, "hog: block side in cells (L2-Hys)")
    flags.DEFINE_integer("lbp_grid", 4, "lbp: histograms over a grid x grid of cells")
    flags.DEFINE_integer("color_bins", 16, "color_hist: bins per channel")
    cli.run(main)
