"""Image folders as people have them: which layout `folder:PATH` is, and which files it holds.

Single-label layouts, the first that matches:

    PATH/train/<class>/*  with PATH/test/<class>/* and/or PATH/val/<class>/*
                          (val may be spelled valid or validation): split folders
    PATH/train/<class>/*  alone: a seeded, stratified hold-out of train for evaluation
    PATH/<class>/*        no split folders (torchvision's ImageFolder layout): the same hold-out

With test/ and a val folder, test/ is evaluated during training and in the final report and
the val folder is the run's val split (calibration, multi-label thresholds, `evaluate
--split=val`); with only one of them, that one is evaluated. Multi-label folders
(`config.task='multilabel'`) hold `labels.csv` beside the images instead of class folders:
in PATH/train/ (and the split folders) or in PATH itself (a seeded random hold-out).

Files: names starting with '.' are skipped (.DS_Store, .ipynb_checkpoints, macOS's ._*
resource forks); extensions match in any case (.JPG, .Jpeg); symlinked files and folders are
followed; class folders are read recursively. Errors name the folder that is wrong.
"""

import csv
import dataclasses
import os

import numpy as np

from jaxcls.data import images

TRAIN = "train"
TEST = "test"
VAL_NAMES = ("val", "valid", "validation")
SPLIT_NAMES = (TRAIN, TEST, *VAL_NAMES)
LABELS_CSV = "labels.csv"


def is_hidden(name: str) -> bool:
    """.DS_Store, .ipynb_checkpoints, ._photo.jpg (AppleDouble), .git, ..."""
    return name.startswith(".")


def is_image(name: str) -> bool:
    """An image extension, in any case: a.JPG, b.Jpeg, c.png."""
    return name.lower().endswith(images.IMAGE_EXTENSIONS)


def walk_files(root: str) -> list[str]:
    """Every non-hidden file under `root`, recursively and sorted, through symlinks (a link
    back to a folder already visited is not entered again)."""
    found, seen = [], set()
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not is_hidden(d))
        found += [os.path.join(dirpath, f) for f in files if not is_hidden(f)
                  and os.path.isfile(os.path.join(dirpath, f))]
    return sorted(found)


def image_files(root: str) -> list[str]:
    """The image files (see `is_image`) among `walk_files(root)`."""
    return [p for p in walk_files(root) if is_image(os.path.basename(p))]


def subfolders(path: str) -> list[str]:
    """Names of the non-hidden folders (or links to folders) in `path`, sorted."""
    return sorted(e.name for e in os.scandir(path) if not is_hidden(e.name) and e.is_dir())


def class_files(split_dir: str) -> dict[str, list[str]]:
    """{class name: sorted image paths} for split_dir/<class>/...; errors name what is wrong."""
    if not os.path.isdir(split_dir):
        raise FileNotFoundError(f"dataset folder {split_dir!r} does not exist")
    classes = subfolders(split_dir)
    if not classes:
        raise ValueError(f"dataset folder {split_dir!r} has no class sub-folders; expected "
                         f"{split_dir}/<class>/<image files>")
    found = {c: image_files(os.path.join(split_dir, c)) for c in classes}
    empty = [c for c, files in found.items() if not files]
    if empty:
        raise ValueError(f"class folder {os.path.join(split_dir, empty[0])!r} has no image "
                         f"files ({', '.join(images.IMAGE_EXTENSIONS)}, any case)"
                         + (f"; nor have {empty[1:]}" if len(empty) > 1 else ""))
    return found


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a folder dataset's splits are: `train` (a folder), `eval` and `val` (folders or
    None: `eval` None means a hold-out of train), and whether train is PATH itself (flat)."""

    root: str
    train: str
    eval: str | None
    val: str | None
    flat: bool

    def describe(self, holdout_fraction: float, seed: int, stratified: bool = True) -> str:
        """The log line saying which folder is used for what."""
        if self.eval is None:
            kind = "stratified" if stratified else "random"
            where = (f"{self.root} has no split folders (train/, val/, test/)" if self.flat
                     else f"{self.root} has no test/ or val/ folder")
            return (f"{where}: training on {100 * (1 - holdout_fraction):.0f}% of "
                    f"{'it' if self.flat else 'train/'}, evaluating on a {kind} hold-out of "
                    f"{100 * holdout_fraction:.0f}% (config.holdout_fraction, seed {seed})")
        name = os.path.basename(self.eval)
        text = (f"{self.root}: training on train/, evaluating on {name}/ (during training "
                f"and in the final report)")
        if self.val is not None:
            text += (f"; {os.path.basename(self.val)}/ is the val split (calibration, "
                     f"thresholds, evaluate --split=val)")
        return text


def discover(path: str, multilabel: bool = False) -> Layout:
    """The layout of `folder:PATH` (see the module docstring)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"dataset folder {path!r} does not exist")
    names = subfolders(path)
    splits = [n for n in names if n.lower() in SPLIT_NAMES]
    vals = [n for n in splits if n.lower() in VAL_NAMES]
    if len(vals) > 1:
        raise ValueError(f"dataset folder {path!r} has {len(vals)} validation folders {vals}: "
                         f"keep one (val, valid or validation)")
    train = next((n for n in splits if n.lower() == TRAIN), None)
    if train is None and splits:
        raise ValueError(f"dataset folder {path!r} has {splits[0]}/ but no train/ folder")
    if train is None:
        if multilabel and os.path.isfile(os.path.join(path, LABELS_CSV)):
            return Layout(path, path, None, None, flat=True)
        if multilabel:
            raise FileNotFoundError(
                f"config.task='multilabel': {path!r} has neither {LABELS_CSV} nor a train/ "
                f"folder with one")
        if not names:
            what = ("image files but no class sub-folders" if any(
                is_image(f) for f in os.listdir(path)) else "no class sub-folders")
            raise ValueError(f"dataset folder {path!r} has {what}; expected "
                             f"{path}/<class>/<image files> or {path}/train/<class>/...")
        return Layout(path, path, None, None, flat=True)
    test = next((n for n in splits if n.lower() == TEST), None)
    val = vals[0] if vals else None
    join = lambda n: None if n is None else os.path.join(path, n)  # noqa: E731
    return Layout(path, join(train), join(test or val), join(val if test else None),
                  flat=False)


def check_same_classes(train_dir: str, train: list[str], other_dir: str, other: list[str]
                       ) -> list[str]:
    """Raises when `other_dir` has classes that train lacks (the model has no output for
    them); returns train's classes that `other_dir` lacks (the caller warns)."""
    unknown = sorted(set(other) - set(train))
    if unknown:
        raise ValueError(f"{other_dir!r} has classes that {train_dir!r} lacks: {unknown} "
                         f"(the class sets of the splits differ; train has {train})")
    return sorted(set(train) - set(other))


def read_labels_csv(split_dir: str, class_names: list[str] | None = None
                    ) -> tuple[list[str], list[str], np.ndarray]:
    """(class names, image paths, multi-hot labels [N, C]) from split_dir/labels.csv: a header
    `path,labels` and rows `img.jpg,cat;dog` (classes separated by ';', none allowed), or a
    header `path,<class>,<class>,...` and one 0/1 column per class. Paths are relative to
    split_dir; each must exist. Given `class_names` (those of train), the file must use no
    others."""
    path = os.path.join(split_dir, LABELS_CSV)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config.task='multilabel': {path!r} does not exist; it lists "
                                f"the images with a header 'path,labels' and rows "
                                f"'img.jpg,cat;dog' (or one 0/1 column per class)")
    with open(path, newline="") as f:
        header, *rows = [r for r in csv.reader(f) if r]
    if len(header) < 2 or header[0] != "path":
        raise ValueError(f"{path}: the header must be 'path,labels' or 'path,<class>,...', "
                         f"got {','.join(header)!r}")
    for line, r in enumerate(rows, 2):
        if len(r) != len(header):
            raise ValueError(f"{path}:{line}: {len(r)} fields, the header has {len(header)}")
    if not rows:
        raise ValueError(f"{path} lists no images")
    paths = [os.path.join(split_dir, r[0]) for r in rows]
    missing = [r[0] for r, p in zip(rows, paths, strict=True) if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{path} lists {len(missing)} files that {split_dir!r} does "
                                f"not hold, e.g. {missing[:3]}")
    if header == ["path", "labels"]:
        named = [[n.strip() for n in r[1].split(";") if n.strip()] for r in rows]
        found = sorted({n for names in named for n in names})
        class_names = class_names or found
        unknown = sorted(set(found) - set(class_names))
        if unknown:
            raise ValueError(f"{path} has classes that the train split lacks: {unknown}")
        index = {c: i for i, c in enumerate(class_names)}
        multi_hot = np.zeros((len(rows), len(class_names)), np.float32)
        for i, names in enumerate(named):
            multi_hot[i, [index[n] for n in names]] = 1.0
        return class_names, paths, multi_hot
    if class_names is not None and header[1:] != class_names:
        raise ValueError(f"{path}: class columns {header[1:]} differ from train's {class_names}")
    try:
        multi_hot = np.array([[float(v) for v in r[1:]] for r in rows], np.float32)
    except ValueError as e:
        raise ValueError(f"{path}: class columns must hold 0 or 1 ({e})") from None
    return header[1:], paths, multi_hot.reshape(len(rows), len(header) - 1)
