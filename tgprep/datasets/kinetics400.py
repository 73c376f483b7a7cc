"""Kinetics-400: clips named after their YouTube id and segment, listed by the official train / val CSVs."""

import csv
import io
from pathlib import Path

from tgprep.config import BuildConfig
from tgprep.datasets.common import (Listed, Listing, compare_counts, find_annotation_dir, index_videos, load_manifest,
                                    read_text, resolve)
from tgprep.errors import UserError

DESCRIPTION = """\
Kinetics-400: clips named {youtube_id}_{start:06d}_{end:06d}.{mp4,mkv,webm} or {youtube_id}.{ext},
flat or in class folders, anywhere under --root; the official CSVs (kinetics-400_train.csv /
kinetics-400_val.csv, or kinetics_400_*.csv, train.csv, validate.csv / val.csv) under --root or
--annotations. Missing clips are normal (deleted YouTube videos): they are counted, not fatal.
--split and --pool are ignored."""

CSV_NAMES = {
    "train": ("kinetics-400_train.csv", "kinetics_400_train.csv", "kinetics400_train.csv", "train.csv"),
    "val": ("kinetics-400_val.csv", "kinetics_400_val.csv", "kinetics400_val.csv", "validate.csv", "val.csv"),
}
COLUMNS = ("label", "youtube_id", "time_start", "time_end")
EXTENSIONS = (".mp4", ".mkv", ".webm")


def scan(config: BuildConfig) -> Listing:
    manifest = load_manifest("kinetics400")
    root = Path(config.root)
    folder = find_annotation_dir(
        root, Path(config.annotations) if config.annotations else None,
        lambda f: any((f / name).is_file() for names in CSV_NAMES.values() for name in names),
        "Kinetics-400 CSV (" + ", ".join(CSV_NAMES["train"] + CSV_NAMES["val"]) + ")",
        "point --annotations at the folder holding kinetics-400_train.csv and kinetics-400_val.csv")
    listed, notes = [], []
    for split, names in CSV_NAMES.items():
        path = next((folder / name for name in names if (folder / name).is_file()), None)
        if path is None:
            notes.append(f"kinetics400: no {split} CSV ({' / '.join(names)}) in {folder}; the {split} set is empty")
            continue
        rows = read_csv(path, split, manifest["classes"])
        notes += compare_counts(f"kinetics400 {path.name}", {split: len(rows)}, {split: manifest["counts"][split]})
        listed += rows
    listing = resolve("kinetics400", root, manifest["classes"], listed, index_videos(root), "kinetics400")
    listing.notes += notes
    return listing


def read_csv(path: Path, split: str, classes: list[str]) -> list[Listed]:
    """Every row of an official CSV (label,youtube_id,time_start,time_end,split[,is_cc]) as a listed clip."""
    # Some copies write labels with underscores for spaces ("using_segway"): both spellings map.
    label_of = {name.replace(" ", "_"): label for label, name in enumerate(classes)}
    listed = []
    with io.StringIO(read_text(path), newline="") as file:
        reader = csv.DictReader(file)
        if not set(COLUMNS) <= set(reader.fieldnames or ()):
            raise UserError(f"{path}: the header must name the columns {','.join(COLUMNS)}; "
                            "use the official Kinetics-400 CSV")
        for row in reader:
            where = f"{path}, line {reader.line_num}"
            label = label_of.get((row["label"] or "").replace(" ", "_"))
            if label is None:
                raise UserError(f"{where}: label {row['label']!r} is not one of the 400 classes in "
                                "manifests/kinetics400.json; use the official Kinetics-400 CSV")
            youtube_id, start, end = row["youtube_id"], row["time_start"] or "", row["time_end"] or ""
            if not youtube_id or not start.isdigit() or not end.isdigit():
                raise UserError(f"{where}: expected a youtube_id and whole seconds in time_start and time_end, "
                                f"got {list(row.values())}; restore the official file")
            clip = f"{youtube_id}_{int(start):06d}_{int(end):06d}"
            names = tuple(clip + ext for ext in EXTENSIONS) + tuple(youtube_id + ext for ext in EXTENSIONS)
            listed.append(Listed(clip, names, f"{row['label']}/{clip}.mp4", classes[label], label, split))
    return listed
