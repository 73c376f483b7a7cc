"""HMDB-51: class folders of .avi files and the official testTrainMulti_7030_splits lists."""

from collections import Counter
from pathlib import Path, PurePosixPath

from tgprep.config import BuildConfig
from tgprep.datasets.common import (Listed, Listing, check_split, compare_counts, find_annotation_dir, index_videos,
                                    load_manifest, read_lines, resolve)
from tgprep.errors import UserError

DESCRIPTION = """\
HMDB-51: <class>/<video>.avi under --root (nested in any way), and the official
testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt under --root or --annotations.
--split 1|2|3; --pool all-non-test (ids 1 and 0, 5236 videos, what the paper trains on)
or official (id 1 only, 3570). Val is the 1530 test videos (id 2)."""

SPLIT_IDS = {"1": "train", "2": "test", "0": "unused"}
POOLS = {"official": ("train",), "all-non-test": ("train", "unused")}


def scan(config: BuildConfig) -> Listing:
    manifest = load_manifest("hmdb51")
    expected = manifest["counts"].get(str(config.split))
    return scan_split_lists(config, "hmdb51", manifest["classes"], "manifests/hmdb51.json", expected)


def scan_split_lists(config: BuildConfig, dataset: str, classes: list[str], classes_from: str,
                     expected: dict[str, int] | None) -> Listing:
    """Any dataset laid out like HMDB-51: per-class split files with ids 1 (train), 2 (test), 0 (unused).

    classes (label order) come from classes_from; expected counts, when given, are checked against the lists.
    """
    check_split(config.split)
    if config.pool not in POOLS:
        raise UserError(f"--pool {config.pool}: unknown; choose one of {', '.join(POOLS)}")
    root = Path(config.root)
    folder = find_annotation_dir(
        root, Path(config.annotations) if config.annotations else None,
        lambda f: any(f.glob(f"*_test_split{config.split}.txt")),
        f"split files (<class>_test_split{config.split}.txt)",
        "point --annotations at the folder holding testTrainMulti_7030_splits")
    entries = read_split_files(folder, config.split, classes, classes_from)
    title = f"{dataset} split {config.split} (pool {config.pool})"
    split_of = {"test": "val", **{use: "train" for use in POOLS[config.pool]}}
    label = {name: i for i, name in enumerate(classes)}
    listed = [Listed(PurePosixPath(video).stem, (video,), f"{name}/{video}", name, label[name], split_of.get(use))
              for name, video, use in entries]
    listing = resolve(dataset, root, classes, listed, index_videos(root), title)
    absent = sorted(set(classes) - {name for name, _, _ in entries})
    if absent:
        listing.notes.append(f"warning: {folder} has no split {config.split} file for {len(absent)} classes: "
                             + ", ".join(absent))
    if expected:
        listing.notes += compare_counts(title, Counter(use for _, _, use in entries), expected)
    return listing


def read_split_files(folder: Path, split: int, classes: list[str], classes_from: str) -> list[tuple[str, str, str]]:
    """(class name, video file name, "train" | "test" | "unused") for every line of the split's files."""
    entries = []
    suffix = f"_test_split{split}.txt"
    for path in sorted(folder.glob(f"*{suffix}")):
        name = path.name.removesuffix(suffix)
        if name not in classes:
            raise UserError(f"{path}: class {name!r} is not one of the {len(classes)} classes in {classes_from}; "
                            "remove the file or use the matching dataset")
        for number, line in read_lines(path):
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in SPLIT_IDS:
                raise UserError(f"{path}, line {number}: expected '<video>.avi <id>' with id 1, 2 or 0, got {line!r}; "
                                "restore the official file")
            entries.append((name, parts[0], SPLIT_IDS[parts[1]]))
    return entries
