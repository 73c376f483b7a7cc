"""What every dataset adapter returns (Record, Listing) and the helpers they share."""

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from tgprep import limits
from tgprep.errors import UserError

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")


@dataclass(frozen=True, order=True)
class Record:
    """One video as a dataset lists it. Sorting records sorts them by key."""

    key: str          # "{dataset}_{video id}": unique in the dataset, no dots, the same on every machine
    path: str         # relative to the root, "/"-separated; for a missing video, where it was expected
    class_name: str
    label: int        # 0-based, in the dataset's official class order
    split: str        # "train" (the training pool) or "val"


@dataclass
class Listing:
    """What an adapter found: the training pool and val set on disk, and what is missing."""

    dataset: str
    root: Path
    classes: list[str]                                   # class names in label order
    train: list[Record]                                  # training pool found on disk, sorted by key
    val: list[Record]                                    # val videos found on disk, sorted by key
    missing: list[Record] = field(default_factory=list)  # listed (train pool or val) but not on disk
    unusable: list[tuple[Record, str]] = field(default_factory=list)  # on disk but not buildable, and why
    unlisted: int = 0                                    # videos on disk that no list names
    notes: list[str] = field(default_factory=list)       # lines for the summary, e.g. checks against the manifest


def make_key(dataset: str, video_id: str) -> str:
    """A tar-safe sample key: characters other than [A-Za-z0-9_-] become '_'.

    When anything was replaced, a short hash of the original id is appended, so that two
    names differing only in such characters ("a(1)" and "a_1_") still get different keys. The hash is of
    the name's bytes on disk, so a name that is not UTF-8 (its bytes held as surrogates) gets a key too.
    """
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", video_id)
    if safe != video_id:
        safe += "-" + hashlib.sha1(video_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{dataset}_{safe}"


def index_videos(root: Path) -> dict[str, list[str]]:
    """Every video file under root, however nested: file name -> relative paths (sorted). Entries that are
    not regular files (FIFOs, devices, broken links) are indexed too, so that they are reported, not lost;
    folders are not. Names that are not UTF-8 come as Python holds them (undecodable bytes as surrogates)."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and not path.is_dir():
            found.setdefault(path.name, []).append(path.relative_to(root).as_posix())
    return found


def set_aside_unusable(listing: Listing) -> None:
    """Move the videos that cannot be built out of train and val into listing.unusable, with the reason."""
    for split in ("train", "val"):
        kept = []
        for record in getattr(listing, split):
            reason = unusable_reason(listing.root, record.path)
            if reason is None:
                kept.append(record)
            else:
                listing.unusable.append((record, reason))
        setattr(listing, split, kept)
    if listing.unusable:
        listing.notes.append(f"warning: {len(listing.unusable)} videos under {listing.root} cannot be built "
                             f"(e.g. {listing.unusable[0][0].path!r}: {listing.unusable[0][1]}); "
                             "each is in failures.jsonl with its reason")


def unusable_reason(root: Path, path: str) -> str | None:
    """Why root/path cannot be built, found without opening it (opening a FIFO blocks); None when it can."""
    if path.splitlines() != [path]:
        return "its name holds a line break, which a list file (manifests/*.txt) cannot hold; rename the file"
    full = root / path
    try:
        mode = os.stat(full).st_mode  # through links
    except OSError as e:
        return f"a broken link ({e.strerror})" if full.is_symlink() else f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return f"{kind}{' (through a link)' if full.is_symlink() else ''}, not a video file; it was never opened"


def find_annotation_dir(root: Path, annotations: Path | None, looks_right, what: str, fix: str) -> Path:
    """The first folder, at most two levels below `annotations` (or `root`), for which looks_right(folder) holds.

    The search is breadth first and sorted, so the same folder is found on every machine.
    """
    base = annotations if annotations is not None else root
    if not base.is_dir():
        raise UserError(f"{base}: no such folder; {fix}")
    level = [base]
    for _depth in range(3):
        for folder in level:
            if looks_right(folder):
                return folder
        level = sorted(p for folder in level for p in folder.iterdir() if p.is_dir())
    raise UserError(f"{base}: no {what} found here or two levels down; {fix}")


def load_manifest(name: str) -> dict:
    """The facts file manifests/{name}.json shipped with tgprep."""
    return json.loads(resources.files("tgprep.manifests").joinpath(f"{name}.json").read_text())


def check_unique_keys(records: list[Record]) -> None:
    seen: dict[str, str] = {}
    for record in records:
        if record.key in seen:
            raise UserError(f"{record.path}: same sample key as {seen[record.key]} ({record.key}); "
                            "rename one of the two videos")
        seen[record.key] = record.path


@dataclass(frozen=True)
class Listed:
    """One video as an official list names it, before it is looked for on disk."""

    video_id: str            # the part of the key after the dataset name
    names: tuple[str, ...]   # file names it may have on disk, in order of preference (as the index spells them)
    expected: str            # where the dataset's own layout puts it, relative to the root
    class_name: str
    label: int
    split: str | None        # "train", "val", or None: named by the list but outside the chosen pool


def check_split(split: int) -> None:
    if split not in (1, 2, 3):
        raise UserError(f"--split {split}: the official lists come in splits 1, 2 and 3; choose one of them")


def read_lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of a list file with their 1-based numbers, stripped (CRLF or LF).

    Read as UTF-8, with bytes that are not UTF-8 kept as they are (Python's surrogateescape): a list names
    files, and a file name is bytes, so such an entry names exactly the file with those bytes, and the
    manifests a build writes (which keep such names byte for byte) read back as lists.
    """
    return [(n, line.strip()) for n, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]


def read_text(path: Path) -> str:
    """A list file's text (see read_lines), its size checked first."""
    try:
        with open(path, "rb") as f:
            limits.check_size(os.fstat(f.fileno()).st_size, limits.MAX_LIST_BYTES)
            return f.read().decode("utf-8", "surrogateescape")
    except OSError as e:
        raise UserError(f"{path}: cannot read it ({e.strerror}); check the path") from None
    except ValueError as e:
        raise UserError(f"{path}: {e}; a list file is lines of text, check the path") from None


def compare_counts(title: str, counted: dict[str, int], expected: dict[str, int]) -> list[str]:
    """A warning note when the official lists hold other numbers of videos than the manifest says they should."""
    if all(counted.get(name, 0) == n for name, n in expected.items()):
        return []
    found = " / ".join(f"{name} {counted.get(name, 0)}" for name in expected)
    wanted = " / ".join(f"{name} {n}" for name, n in expected.items())
    return [f"warning: {title} lists hold {found} videos where the official release has {wanted}; "
            "the list files may be incomplete or edited"]


def resolve(dataset: str, root: Path, classes: list[str], listed: list[Listed], index: dict[str, list[str]],
            title: str) -> Listing:
    """Look each listed video up in the index of files under root and sort the results into a Listing."""
    found: dict[str, list[Record]] = {"train": [], "val": [], "missing": []}
    named: set[str] = set()
    outside = 0
    for item in listed:
        named.update(item.names)
        paths = next((index[name] for name in item.names if name in index), None)
        if item.split is None:
            outside += paths is not None
            continue
        path = _pick(paths, item.expected) if paths else item.expected
        record = Record(make_key(dataset, item.video_id), path, item.class_name, item.label, item.split)
        found[item.split if paths else "missing"].append(record)
    unlisted = sum(len(paths) for name, paths in index.items() if name not in named)
    listing = Listing(dataset, root, classes, train=sorted(found["train"]), val=sorted(found["val"]),
                      missing=sorted(found["missing"]), unlisted=unlisted)
    listing.notes.append(_found_note(title, listing))
    if outside:
        listing.notes.append(f"{title}: {outside} videos on disk are listed but outside the training pool and val")
    if unlisted:
        listing.notes.append(f"{dataset}: {unlisted} video files under {root} are named by no list and left out")
    return listing


def _pick(paths: list[str], expected: str) -> str:
    """Of several copies of one file, the one at the layout's own place, else the first in sorted order."""
    return min(paths, key=lambda path: (not (path == expected or path.endswith("/" + expected)), path))


def _found_note(title: str, listing: Listing) -> str:
    def share(split: str, on_disk: list[Record]) -> str:
        listed = len(on_disk) + sum(r.split == split for r in listing.missing)
        return f"{split} {len(on_disk)} of {listed}"

    on_disk = len(listing.train) + len(listing.val)
    listed = on_disk + len(listing.missing)
    return (f"{title}: {on_disk} of {listed} listed videos found ({share('train', listing.train)}, "
            f"{share('val', listing.val)}); {len(listing.missing)} missing")
