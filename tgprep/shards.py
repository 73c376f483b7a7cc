"""The shard plan, atomic shard writing with a .json sidecar per tar, and the output root's files."""

import hashlib
import io
import json
import os
import tarfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from tgprep import limits
from tgprep.datasets.common import Record
from tgprep.errors import disk_full
from tgprep.splits import Splits

SETS = ("labeled", "unlabeled", "val")


@dataclass
class ShardTask:
    """One tar to write: which videos go in, in which order."""

    name: str                 # e.g. "labeled-000003": the tar is {name}.tar, its sidecar {name}.json
    set: str                  # labeled | unlabeled | val
    records: list[Record]
    failed: dict[str, str] = field(default_factory=dict)  # key -> reason: record, do not decode (it killed workers)


def plan_shards(splits: Splits, videos_per_shard: int, seed: int) -> list[ShardTask]:
    """Cut each set into shards. Training videos are shuffled (seeded) so that every shard mixes
    classes; val keeps key order. The plan depends only on the splits, the shard size and the seed."""
    tasks = []
    for number, (set_name, records) in enumerate(zip(SETS, (splits.labeled, splits.unlabeled, splits.val))):
        records = sorted(records)
        if set_name != "val":
            order = np.random.default_rng([seed, number]).permutation(len(records))
            records = [records[i] for i in order]
        for index, start in enumerate(range(0, len(records), videos_per_shard)):
            tasks.append(ShardTask(f"{set_name}-{index:06d}", set_name, records[start:start + videos_per_shard]))
    return tasks


def write_shard(out: Path, task: ShardTask, make_sample: Callable[[Record, bool], dict]) -> dict:
    """Write one tar under a temporary name, rename it, then write its sidecar: a tar with a sidecar is done.

    make_sample(record, with_label) returns the sample, or raises for a video that cannot be made; such a
    video goes into the sidecar's failures with its reason, and the shard goes on.
    """
    tmp = temporary(out / f"{task.name}.tar")
    classes, keys, failures, frames = Counter(), [], [], 0
    with open(tmp, "xb") as stream, tarfile.open(fileobj=stream, mode="w") as tar:
        for record in task.records:
            if record.key in task.failed:
                failures.append({"key": record.key, "path": record.path, "set": task.set,
                                 "reason": task.failed[record.key]})
                continue
            try:
                sample = make_sample(record, task.set != "unlabeled")
            except Exception as e:  # a bad video is recorded, never fatal; a full disk stops the build
                if disk_full(e):
                    raise
                failures.append(failure(record, task.set, e))
                continue
            try:
                add_sample(tar, sample)
            finally:
                for value in sample.values():
                    if isinstance(value, io.IOBase):  # a spooled payload (tgprep.sample.make_sample)
                        value.close()
            keys.append(record.key)
            classes[record.class_name] += 1
            frames += json.loads(sample["json"])["frames"]
    tar_path = out / f"{task.name}.tar"
    os.replace(tmp, tar_path)
    sidecar = {
        "shard": tar_path.name,
        "set": task.set,
        "samples": len(keys),
        "frames": frames,
        "bytes": tar_path.stat().st_size,
        "sha256": file_sha256(tar_path),
        "classes": dict(sorted(classes.items())),
        "keys": keys,
        "failures": failures,
    }
    write_json_atomic(out / f"{task.name}.json", sidecar)
    return sidecar


def add_sample(tar: tarfile.TarFile, sample: dict) -> None:
    """A sample's members, "{key}.{field}" in field order, with fixed owner, mode and time: the same sample
    gives the same bytes. A member is bytes or a binary file (a spooled payload), copied whole.
    (The standard library's tarfile, not webdataset's writer: importing webdataset imports torch, 1.4 s of
    every tgprep command.)"""
    for field in sorted(f for f in sample if f != "__key__"):
        data = sample[field] if isinstance(sample[field], io.IOBase) else io.BytesIO(sample[field])
        info = tarfile.TarInfo(f"{sample['__key__']}.{field}")
        info.size, info.mode, info.mtime = data.seek(0, io.SEEK_END), 0o444, 0
        data.seek(0)
        tar.addfile(info, data)


def failure(record: Record, set_name: str, error: BaseException) -> dict:
    """A failures.jsonl line: which video, in which set, and why."""
    reason = str(error) or type(error).__name__
    if type(error).__name__ != "VideoError":  # not a decoding verdict: say what broke
        reason = f"{type(error).__name__}: {reason}"
    return {"key": record.key, "path": record.path, "set": set_name, "reason": reason}


def finished(out: Path, task: ShardTask) -> dict | None:
    """The sidecar of a shard that an earlier run finished for exactly these videos, else None."""
    try:
        sidecar = limits.read_json(out / f"{task.name}.json", limits.MAX_SIDECAR_BYTES)
        done = set(sidecar["keys"]) | {f["key"] for f in sidecar["failures"]}
        written = (out / sidecar["shard"]).is_file()
    except (OSError, ValueError, LookupError, TypeError):  # absent, damaged, too deep, not a sidecar: write again
        return None
    return sidecar if written and done == {r.key for r in task.records} else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, value) -> None:
    tmp = temporary(path)
    with open(tmp, "x") as f:
        f.write(json.dumps(value, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def temporary(path: Path) -> Path:
    """A new name beside path to write it under, then rename. Unique across processes and machines: on a shared
    folder, a task that Ray retried elsewhere may still be writing the same file under its own pid there. The
    pid comes last (tests read it); a build's start-up removes what a killed writer left (*.tmp*)."""
    return path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:12]}-{os.getpid()}")
