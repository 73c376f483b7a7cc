"""Any folder of class subfolders: classes are the subfolder names, val is a seeded share of each class."""

from pathlib import Path, PurePosixPath

import numpy as np

from tgprep.config import BuildConfig
from tgprep.datasets.common import Listing, Record, index_videos, make_key
from tgprep.errors import UserError

DESCRIPTION = """\
Any folder laid out as --root/<class>/<video> (deeper nesting inside a class is fine). Classes are
the subfolder names, sorted; --val-fraction of each class (seeded by --seed) is held out for val,
keeping at least one training video in every class of two or more. No annotation files."""


def scan(config: BuildConfig) -> Listing:
    if not 0 <= config.val_fraction < 1:
        raise UserError(f"--val-fraction {config.val_fraction}: must be at least 0 and below 1")
    root = Path(config.root)
    by_class: dict[str, list[str]] = {}
    loose = 0
    for paths in index_videos(root).values():
        for path in paths:
            if "/" in path:
                by_class.setdefault(path.split("/", 1)[0], []).append(path)
            else:
                loose += 1
    if not by_class:
        raise UserError(f"{root}: no class subfolders holding videos; lay the videos out as <root>/<class>/<video>")
    classes = sorted(by_class)
    train, val = [], []
    for label, name in enumerate(classes):
        paths = sorted(by_class[name])
        held_out = val_indices(len(paths), config.val_fraction, np.random.default_rng([config.seed, label]))
        for i, path in enumerate(paths):
            record = Record(make_key("folder", str(PurePosixPath(path).with_suffix(""))), path, name, label,
                            "val" if i in held_out else "train")
            (val if i in held_out else train).append(record)
    notes = [f"folder: {len(classes)} classes, {len(train)} train and {len(val)} val videos "
             f"(val fraction {config.val_fraction}, seed {config.seed})"]
    if loose:
        notes.append(f"folder: {loose} video files directly in {root} belong to no class folder and are left out")
    empty = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in by_class)
    if empty:
        notes.append(f"folder: {len(empty)} folders in {root} hold no video file and are not classes: "
                     + ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else ""))
    return Listing("folder", root, classes, sorted(train), sorted(val), unlisted=loose, notes=notes)


def val_indices(count: int, fraction: float, rng: np.random.Generator) -> set[int]:
    """Which of count videos go to val: round(count * fraction) of them, but never the last training video."""
    wanted = round(count * fraction)
    if count >= 2:
        wanted = min(wanted, count - 1)
    return set(rng.permutation(count)[:wanted].tolist())
