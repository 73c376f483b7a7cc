"""Which training videos are labeled (a seeded per-class draw, or an exact published list), and list files."""

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tgprep.datasets.common import VIDEO_EXTENSIONS, Record, read_lines
from tgprep.errors import UserError

# a list line: the path (spaces allowed), then up to two numbers (rawframe lists: frames, label)
_LIST_LINE = re.compile(r"(.+?)(?:\s+\d+){0,2}")


@dataclass
class Splits:
    labeled: list[Record]
    unlabeled: list[Record]
    val: list[Record]


def labeled_count(videos: int, ratio: float) -> int:
    """ratio of a class's videos, rounded half up (not to even), at least one, at most all."""
    return min(videos, max(1, math.floor(ratio * videos + 0.5)))


def draw_labeled(pool: list[Record], ratio: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Labeled and unlabeled parts of the training pool: round(ratio * n) videos of each class.

    Each class draws from its own generator, seeded by (seed, label), over its videos sorted by key:
    the result depends on nothing else (not the file system's order, not the other classes).
    """
    if not 0 < ratio <= 1:
        raise UserError(f"--ratio {ratio}: the labeled fraction must be in (0, 1], e.g. --ratio 0.4")
    by_class: dict[int, list[Record]] = {}
    for record in sorted(pool):
        by_class.setdefault(record.label, []).append(record)
    labeled = []
    for label, videos in by_class.items():
        order = np.random.default_rng([seed, label]).permutation(len(videos))
        labeled += [videos[i] for i in order[: labeled_count(len(videos), ratio)]]
    return _split_off(pool, labeled)


def read_video_list(path: Path) -> list[str]:
    """The entries of a list file: MMAction2 video lists (`path label`), rawframe lists
    (`path frames label`) or bare paths. Paths may hold spaces, so the numbers are taken from the right.
    Read as read_lines reads every list (UTF-8, other bytes kept as they are); an empty list is refused.
    """
    entries = [_LIST_LINE.fullmatch(line).group(1) for _, line in read_lines(path)]
    if not entries:
        raise UserError(f"{path}: the labeled list is empty; list the labeled videos, one per line, "
                        "or give --ratio instead")
    return entries


def select_listed(pool: list[Record], listed: list[str], source: Path, missing: list[Record]) -> tuple[list[Record], list[Record]]:
    """Labeled = exactly the pool videos the list names; every entry must name one.

    An entry names a video by its file stem (extension-free, so rawframe folders match), or by
    folder/stem where the stem alone is ambiguous. Entries naming listed-but-absent videos (there
    only with --allow-missing) are dropped, not errors.
    """
    in_pool, absent = _by_stem(pool), _by_stem(missing)
    chosen, unknown = [], []
    for entry in listed:
        found = _match(entry, in_pool)
        if found is not None:
            chosen.append(found)
        elif _match(entry, absent) is None:
            unknown.append(entry)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise UserError(f"{source}: {len(unknown)} entries name no video of the training pool: {shown}; "
                        "check --dataset, --split and --pool")
    twice = [r.path for r, n in Counter(chosen).items() if n > 1]
    if twice:
        raise UserError(f"{source}: {twice[0]} is listed more than once; list each video once")
    return _split_off(pool, chosen)


def write_list(path: Path, records: list[Record]) -> None:
    """An MMAction2 video list: `relative/path.ext label`, one video per line, sorted by key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name that is not UTF-8 is written byte for byte, as read_lines reads it back (names with line
    # breaks never get here: the scan sets them aside)
    path.write_text("".join(f"{r.path} {r.label}\n" for r in sorted(records)), encoding="utf-8",
                    errors="surrogateescape")


def class_counts(records: list[Record], classes: list[str]) -> dict[str, int]:
    counts = Counter(r.label for r in records)
    return {name: counts.get(label, 0) for label, name in enumerate(classes)}


def _split_off(pool: list[Record], chosen: list[Record]) -> tuple[list[Record], list[Record]]:
    keys = {r.key for r in chosen}
    return sorted(chosen), sorted(r for r in pool if r.key not in keys)


def _by_stem(records: list[Record]) -> dict[str, list[Record]]:
    index: dict[str, list[Record]] = {}
    for record in records:
        index.setdefault(_parts(record.path)[1], []).append(record)
    return index


def _match(entry: str, by_stem: dict[str, list[Record]]) -> Record | None:
    """The record an entry names: by stem, or by folder/stem where the stem alone is ambiguous."""
    folder, stem = _parts(entry)
    candidates = by_stem.get(stem, [])
    if len(candidates) > 1:
        candidates = [r for r in candidates if _parts(r.path)[0] == folder]
    return candidates[0] if len(candidates) == 1 else None


def _parts(path: str) -> tuple[str, str]:
    """(parent folder, stem) of a list entry or a record's path, compared without case; only a video
    extension is cut, so rawframe folder names (no extension, maybe dots) stay whole."""
    p = PurePosixPath(path.replace("\\", "/").lower())
    stem = p.name[: -len(p.suffix)] if p.suffix in VIDEO_EXTENSIONS else p.name
    return p.parent.name, stem
