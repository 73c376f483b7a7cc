"""The shapes of the JSON files a build writes beside its shards: dataset.json and one sidecar per tar.

Readers (tgprep verify and inspect, tgtrain) load them with these functions, which bound their size and
nesting (tgprep.limits) and check every field they rely on, so a damaged or foreign file is one ValueError
saying which field is wrong, never a KeyError or RecursionError further on.
"""

import re
from pathlib import Path

from tgprep import limits
from tgprep.shards import SETS

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHARD_NAME = re.compile(rf"({'|'.join(SETS)})-[0-9]{{6,}}\.tar")


def read_dataset(path: Path) -> dict:
    """dataset.json, checked: classes (names in label order), videos per set, shards (None while planned).
    OSError when it cannot be read, ValueError (with the reason) when it is not a build's dataset.json."""
    value = limits.read_json(path, limits.MAX_DATASET_JSON_BYTES)
    check_dataset(value)
    return value


def check_dataset(value) -> None:
    _require(isinstance(value, dict), "not a JSON object")
    classes = value.get("classes")
    _require(isinstance(classes, list) and 0 < len(classes) <= limits.MAX_CLASSES
             and all(isinstance(c, str) for c in classes), "'classes' is not a list of class names")
    _require(len(set(classes)) == len(classes), "'classes' names a class twice")
    videos = value.get("videos")
    _require(isinstance(videos, dict), "'videos' is not an object of counts per set")
    for name in SETS:
        limits.count(videos.get(name), f"'videos' {name!r}")
    _require(value.get("status") in ("planned", "complete"), "'status' is neither 'planned' nor 'complete'")
    shards = value.get("shards")
    _require(shards is None or isinstance(shards, list), "'shards' is not a list of shard entries")
    for entry in shards or []:
        check_entry(entry)
    names = [entry["shard"] for entry in shards or []]
    _require(len(set(names)) == len(names), "'shards' names a shard twice")


def check_entry(entry) -> None:
    """One shard of dataset.json's list, which remote readers take as the index: its name is a plain shard name
    (never a path), its set the name's, and its bytes within what a reader fetches."""
    _require(isinstance(entry, dict) and isinstance(entry.get("shard"), str)
             and _SHARD_NAME.fullmatch(entry["shard"]) is not None,
             "'shards' has an entry whose 'shard' is not a name such as labeled-000000.tar")
    name = entry["shard"]
    _require(entry.get("set") == name.rsplit("-", 1)[0], f"shard {name}: 'set' is not {name.rsplit('-', 1)[0]!r}")
    for field in ("samples", "frames"):
        limits.count(entry.get(field), f"shard {name}: {field!r}")
    limits.count(entry.get("bytes"), f"shard {name}: 'bytes'", high=limits.MAX_SHARD_BYTES)
    _require(isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"]) is not None,
             f"shard {name}: 'sha256' is not 64 hex digits")


def read_sidecar(path: Path) -> dict:
    """A shard's sidecar, checked. OSError when it cannot be read, ValueError when it is not a sidecar."""
    value = limits.read_json(path, limits.MAX_SIDECAR_BYTES)
    check_sidecar(value)
    return value


def check_sidecar(value) -> None:
    _require(isinstance(value, dict), "not a JSON object")
    _require(isinstance(value.get("shard"), str), "'shard' is not a file name")
    for name in ("samples", "frames"):
        limits.count(value.get(name), repr(name))
    limits.count(value.get("bytes"), "'bytes'", high=limits.MAX_SHARD_BYTES)
    _require(isinstance(value.get("sha256"), str) and _SHA256.fullmatch(value["sha256"]) is not None,
             "'sha256' is not 64 hex digits")
    keys = value.get("keys")
    _require(isinstance(keys, list) and all(isinstance(k, str) for k in keys), "'keys' is not a list of keys")
    _require(len(keys) == value["samples"], f"'keys' lists {len(keys)} keys for {value['samples']} samples")
    failures = value.get("failures")
    _require(isinstance(failures, list) and all(
        isinstance(f, dict) and all(isinstance(f.get(k), str) for k in ("key", "path", "set", "reason"))
        for f in failures), "'failures' is not a list of {key, path, set, reason}")
    classes = value.get("classes", {})
    _require(isinstance(classes, dict) and all(type(n) is int for n in classes.values()),
             "'classes' is not an object of counts")


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise ValueError(problem)
