"""UCF-101: class folders of .avi files and the official ucfTrainTestlist (classInd, train and test lists)."""

from pathlib import Path, PurePosixPath

from tgprep.config import BuildConfig
from tgprep.datasets.common import (Listed, Listing, check_split, compare_counts, find_annotation_dir, index_videos,
                                    load_manifest, read_lines, resolve)
from tgprep.errors import UserError

DESCRIPTION = """\
UCF-101: <class>/v_<class>_gXX_cYY.avi under --root (nested in any way), and the official
ucfTrainTestlist/ (classInd.txt, trainlist0{1,2,3}.txt, testlist0{1,2,3}.txt) under --root
or --annotations. --split 1|2|3; the training pool is the train list (--pool is ignored),
val the test list. Class and file names match case-insensitively (HandstandPushups)."""


def scan(config: BuildConfig) -> Listing:
    check_split(config.split)
    manifest = load_manifest("ucf101")
    root = Path(config.root)
    folder = find_annotation_dir(
        root, Path(config.annotations) if config.annotations else None,
        lambda f: (f / "classInd.txt").is_file() and (f / f"trainlist0{config.split}.txt").is_file(),
        f"UCF-101 lists (classInd.txt and trainlist0{config.split}.txt)",
        "point --annotations at the folder holding ucfTrainTestlist")
    class_of = read_class_index(folder / "classInd.txt", manifest["classes"])
    listed = (read_list(folder / f"trainlist0{config.split}.txt", "train", class_of, manifest["classes"])
              + read_list(folder / f"testlist0{config.split}.txt", "val", class_of, manifest["classes"]))
    # The release spells one class HandstandPushups in its lists and HandStandPushups in its file
    # names, so files are looked up by lower-cased name.
    index: dict[str, list[str]] = {}
    for name, paths in index_videos(root).items():
        index.setdefault(name.lower(), []).extend(paths)
    title = f"ucf101 split {config.split}"
    listing = resolve("ucf101", root, manifest["classes"], listed, index, title)
    counted = {"train": sum(r.split == "train" for r in listed), "test": sum(r.split == "val" for r in listed)}
    listing.notes += compare_counts(title, counted, manifest["counts"][str(config.split)])
    return listing


def read_class_index(path: Path, classes: list[str]) -> dict[str, str]:
    """classInd.txt ("1 ApplyEyeMakeup") as 1-based number -> lower-cased class name, checked against classes."""
    known = {name.lower() for name in classes}
    class_of = {}
    for number, line in read_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise UserError(f"{path}, line {number}: expected '<number> <class>', got {line!r}; "
                            "restore the official file")
        if parts[1].lower() not in known:
            raise UserError(f"{path}, line {number}: class {parts[1]!r} is not one of the 101 UCF-101 classes in "
                            "manifests/ucf101.json; restore the official file or use --dataset folder")
        class_of[parts[0]] = parts[1].lower()
    return class_of


def read_list(path: Path, split: str, class_of: dict[str, str], classes: list[str]) -> list[Listed]:
    """A train list ("Class/v_x.avi 5") or test list ("Class/v_x.avi"); labels come from the class folder."""
    label_of = {name.lower(): label for label, name in enumerate(classes)}
    in_index = set(class_of.values())
    listed = []
    for number, line in read_lines(path):
        parts = line.split()
        folder, _, video = parts[0].rpartition("/")
        if len(parts) > 2 or not folder or folder.lower() not in in_index:
            raise UserError(f"{path}, line {number}: expected '<class>/<video>.avi [label]' with a class from "
                            f"classInd.txt, got {line!r}; restore the official file")
        if len(parts) == 2 and class_of.get(parts[1]) != folder.lower():
            raise UserError(f"{path}, line {number}: label {parts[1]} is not {folder} in classInd.txt; "
                            "restore the official file")
        label = label_of[folder.lower()]
        listed.append(Listed(PurePosixPath(video).stem, (video.lower(),), parts[0], classes[label], label, split))
    return listed
