"""Image folders as people have them (jaxcls/data/folders.py): class folders with and without
split folders, val/valid/validation/test, hidden files, mixed-case extensions, symlinks, empty
class folders, differing class sets, multi-label labels.csv with and without split folders."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from jaxcls import explain, predict, train
from jaxcls.data import folders, sources
from tests.conftest import tiny_config

DIGITS = load_digits()
PIXELS = np.round(DIGITS.images * (255.0 / 16.0)).astype(np.uint8)


def _digit(i: int) -> Image.Image:
    return Image.fromarray(PIXELS[i]).convert("RGB")


def _class_folder(root, classes: dict[str, int], start: int = 0, ext: str = ".png") -> None:
    """root/<class>/<k>.png: `count` real digit images per class (class c: digit index)."""
    for c, (name, count) in enumerate(classes.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        idx = np.flatnonzero(DIGITS.target == c)[start:start + count]
        for k, i in enumerate(idx):
            _digit(i).save(os.path.join(root, name, f"{k:03d}{ext}"))


def _junk(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\x00\x05\x16\x07 AppleDouble, not an image")


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def _load(path, **kw):
    return sources.folder(str(path), 8, 1.0, kw.pop("holdout", 0.2), 0, **kw)


def test_class_folders_without_splits_hold_out_stratified_and_skip_hidden(tmp_path, caplog):
    root = tmp_path / "pets"
    _class_folder(root, {"cats": 10, "dogs": 10, "owls": 10})
    # What real folders hold beside the images: Finder and Jupyter files, AppleDouble copies,
    # notes, mixed-case extensions, a class folder and a file reached through symlinks.
    _junk(str(root / ".DS_Store"))
    _junk(str(root / "cats" / ".DS_Store"))
    _junk(str(root / "cats" / "._000.png"))
    _class_folder(root / ".ipynb_checkpoints", {"cats": 2})
    _class_folder(root / "dogs" / ".ipynb_checkpoints", {"x": 2})
    (root / "dogs" / "README.txt").write_text("not an image")
    os.rename(root / "cats" / "001.png", root / "cats" / "001.PNG")
    _digit(3).save(root / "owls" / "extra.JPEG", format="JPEG")
    _digit(4).save(root / "owls" / "extra2.Jpg", format="JPEG")
    _class_folder(tmp_path / "elsewhere", {"fish": 10})
    os.symlink(tmp_path / "elsewhere" / "fish", root / "fish")
    os.symlink(root / "cats" / "002.png", root / "cats" / "linked.png")

    with caplog.at_level(logging.INFO):
        ds = _load(root)
    assert ds.class_names == ["cats", "dogs", "fish", "owls"]
    counts = [11, 10, 10, 12]  # cats: + the symlinked file; owls: + .JPEG and .Jpg
    assert len(ds.train) + len(ds.eval) == sum(counts) and len(ds.eval) == 9
    assert np.bincount(ds.eval.labels).tolist() == [2, 2, 2, 3]  # stratified: 20% of each
    assert not set(ds.train.paths) & set(ds.eval.paths) and ds.val is None
    every = ds.train.paths + ds.eval.paths
    assert not any("/." in p for p in every)
    assert {os.path.basename(p) for p in every} >= {"001.PNG", "extra.JPEG", "extra2.Jpg",
                                                    "linked.png"}
    assert (f"{root} has no split folders (train/, val/, test/): training on 80% of it, "
            f"evaluating on a stratified hold-out of 20% (config.holdout_fraction, seed 0): "
            f"34 train / 9 eval images, 4 classes") in _messages(caplog)
    again = _load(root)  # seeded: the same split every time
    assert again.eval.paths == ds.eval.paths


@pytest.mark.slow  # (CI budget) two training runs
@pytest.mark.parametrize("multilabel", [False, True])
def test_folders_without_split_folders_train(tmp_path, multilabel):
    """The new layouts end to end: class folders, and labels.csv beside the images (slow: the
    training path is the one test_variants' multi-label folder run takes)."""
    root = tmp_path / "data"
    if multilabel:
        _multilabel_flat(root, 40)
    else:
        _class_folder(root, {"zero": 12, "one": 12})
    config = tiny_config(dataset=f"folder:{root}", num_steps=2, batch_size=8,
                         task="multilabel" if multilabel else "multiclass")
    train.run(config, str(tmp_path / "run"))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    evals = [r for r in rows if r["split"] == "eval"]
    assert evals and np.isfinite(evals[-1]["loss"])
    names = json.load(open(tmp_path / "run" / "class_names.json"))
    assert names == (["big", "odd"] if multilabel else ["one", "zero"])


def test_split_folders_say_which_is_used_for_what(tmp_path, caplog):
    root = tmp_path / "ds"
    _class_folder(root / "train", {"a": 6, "b": 6})
    _class_folder(root / "Validation", {"a": 2, "b": 3}, start=6)
    _class_folder(root / "test", {"a": 4, "b": 4}, start=9)
    with caplog.at_level(logging.INFO):
        ds = _load(root)
    assert (len(ds.train), len(ds.eval), len(ds.val)) == (12, 8, 5)
    assert np.bincount(ds.val.labels).tolist() == [2, 3]
    assert all("/test/" in p for p in ds.eval.paths)
    assert (f"{root}: training on train/, evaluating on test/ (during training and in the final "
            f"report); Validation/ is the val split (calibration, thresholds, evaluate "
            f"--split=val): 12 train / 8 eval / 5 val images, 2 classes") in _messages(caplog)
    # The val folder is the val split: decoded with the rest, and not split twice.
    cached = sources.create(tiny_config(dataset=f"folder:{root}"))
    assert len(cached.val) == 5 and isinstance(cached.val, sources.ArraySource)
    with pytest.raises(ValueError, match=r"val_fraction=0.1: folder:.* has a val folder"):
        sources.create(tiny_config(dataset=f"folder:{root}", val_fraction=0.1))

    # Only a val-like folder: it is the eval split. Only train/: a stratified hold-out.
    only_valid = tmp_path / "only_valid"
    _class_folder(only_valid / "train", {"a": 6, "b": 6})
    _class_folder(only_valid / "valid", {"a": 2, "b": 2}, start=6)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ds = _load(only_valid)
        held = _load(only_valid / "train", holdout=0.5)  # train/ itself is a flat layout
    assert (len(ds.train), len(ds.eval), ds.val) == (12, 4, None)
    assert (f"{only_valid}: training on train/, evaluating on valid/ (during training and in "
            f"the final report): 12 train / 4 eval images, 2 classes") in _messages(caplog)
    assert np.bincount(held.eval.labels).tolist() == [3, 3]
    train_only = tmp_path / "train_only"
    _class_folder(train_only / "train", {"a": 10, "b": 5})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ds = _load(train_only)
    assert np.bincount(ds.eval.labels).tolist() == [2, 1] and len(ds.train) == 12
    assert (f"{train_only} has no test/ or val/ folder: training on 80% of train/, evaluating "
            f"on a stratified hold-out of 20% (config.holdout_fraction, seed 0): 12 train / 3 "
            f"eval images, 2 classes") in _messages(caplog)


def test_folder_errors_name_the_folder(tmp_path, caplog):
    def error(path, **kw):
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            _load(path, **kw)
        return str(e.value)

    assert error(tmp_path / "nowhere") == f"dataset folder '{tmp_path}/nowhere' does not exist"
    empty = tmp_path / "empty"
    _class_folder(empty, {"a": 3})
    _junk(str(empty / "b" / ".DS_Store"))  # only a hidden file: no images
    os.makedirs(empty / "c")
    assert error(empty) == (f"class folder '{empty}/b' has no image files (.jpg, .jpeg, .png, "
                            f".bmp, .webp, .gif, .tif, .tiff, any case); nor have ['c']")
    loose = tmp_path / "loose"
    os.makedirs(loose)
    _digit(0).save(loose / "0.png")
    assert error(loose) == (f"dataset folder '{loose}' has image files but no class "
                            f"sub-folders; expected {loose}/<class>/<image files> or "
                            f"{loose}/train/<class>/...")
    differ = tmp_path / "differ"
    _class_folder(differ / "train", {"a": 3, "b": 3})
    _class_folder(differ / "test", {"a": 2, "b": 2, "c": 2})
    assert error(differ) == (f"'{differ}/test' has classes that '{differ}/train' lacks: "
                             f"['c'] (the class sets of the splits differ; train has ['a', 'b'])")
    fewer = tmp_path / "fewer"
    _class_folder(fewer / "train", {"a": 3, "b": 3})
    _class_folder(fewer / "val", {"a": 2})
    with caplog.at_level(logging.WARNING):
        assert len(_load(fewer).eval) == 2
    assert (f"{fewer}/val has no folder for classes ['b']: they are trained on but not "
            f"evaluated there") in _messages(caplog)
    two_vals = tmp_path / "two_vals"
    _class_folder(two_vals / "train", {"a": 3})
    _class_folder(two_vals / "val", {"a": 1})
    _class_folder(two_vals / "validation", {"a": 1})
    assert error(two_vals) == (f"dataset folder '{two_vals}' has 2 validation folders "
                               f"['val', 'validation']: keep one (val, valid or validation)")
    no_train = tmp_path / "no_train"
    _class_folder(no_train / "test", {"a": 1})
    assert error(no_train) == f"dataset folder '{no_train}' has test/ but no train/ folder"
    assert "config.task='multilabel'" in error(empty, multilabel=True)


def _multilabel_flat(root, n: int, missing: bool = False) -> None:
    """labels.csv beside n digit PNGs (classes odd, big), no split folders."""
    os.makedirs(root)
    rows = []
    for i in range(n):
        _digit(i).save(root / f"{i}.png")
        names = [name for name, on in (("odd", DIGITS.target[i] % 2), ("big",
                                                                        DIGITS.target[i] > 4))
                 if on]
        rows.append(f"{i}.png,{';'.join(names)}\n")
    if missing:
        rows.append("gone.png,odd\n")
    (root / "labels.csv").write_text("path,labels\n" + "".join(rows))
    _junk(str(root / ".DS_Store"))


def test_multilabel_folders_with_and_without_split_folders(tmp_path, caplog):
    flat = tmp_path / "flat"
    _multilabel_flat(flat, 40)
    with caplog.at_level(logging.INFO):
        ds = _load(flat, multilabel=True, holdout=0.25)
    assert ds.class_names == ["big", "odd"] and (len(ds.train), len(ds.eval)) == (30, 10)
    assert ds.train.labels.shape == (30, 2) and not set(ds.train.paths) & set(ds.eval.paths)
    for path, label in zip(ds.eval.paths, ds.eval.labels, strict=True):  # follow their files
        digit = DIGITS.target[int(os.path.basename(path)[:-4])]
        assert label.tolist() == [float(digit > 4), float(digit % 2)]
    assert (f"{flat} has no split folders (train/, val/, test/): training on 75% of it, "
            f"evaluating on a random hold-out of 25% (config.holdout_fraction, seed 0): 30 "
            f"train / 10 eval images, 2 classes") in _messages(caplog)
    splits = tmp_path / "splits"
    _multilabel_flat(splits / "train", 20)
    _multilabel_flat(splits / "valid", 6)
    ds = _load(splits, multilabel=True)
    assert (len(ds.train), len(ds.eval), ds.val) == (20, 6, None)
    gone = tmp_path / "gone"
    _multilabel_flat(gone, 3, missing=True)
    with pytest.raises(FileNotFoundError) as e:
        _load(gone, multilabel=True)
    assert str(e.value) == (f"{gone}/labels.csv lists 1 files that '{gone}' does not hold, "
                            f"e.g. ['gone.png']")


def test_predict_and_explain_list_files_like_training(tmp_path):
    root = tmp_path / "imgs"
    _class_folder(root, {"a": 2})
    _junk(str(root / "a" / "._000.png"))
    _class_folder(root / ".ipynb_checkpoints", {"a": 1})
    (root / "a" / "notes.txt").write_text("predict reports it; explain skips it")
    os.rename(root / "a" / "001.png", root / "a" / "001.Png")
    _class_folder(tmp_path / "other", {"b": 1})
    os.symlink(tmp_path / "other" / "b", root / "b")
    assert folders.image_files(str(root)) == [f"{root}/a/000.png", f"{root}/a/001.Png",
                                              f"{root}/b/000.png"]
    assert explain.image_paths([str(root)]) == folders.image_files(str(root))
    assert list(predict.expand([str(root)])) == [f"{root}/a/000.png", f"{root}/a/001.Png",
                                                 f"{root}/a/notes.txt", f"{root}/b/000.png"]
    os.symlink(root, root / "b" / "loop")  # a symlink cycle is entered once
    assert len(folders.walk_files(str(root))) == 4
