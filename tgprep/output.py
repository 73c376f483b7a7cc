"""A build's output: a local folder, or a bucket (s3://, gs://) written through a local stage folder; its lock,
what earlier runs left there, checked, and the uploads.

Everything is written locally first, by the same writers, into the stage: the output folder itself, or for a
bucket a folder on this machine (`--stage`, by default one per output URL under the user's cache folder). A
shard goes up as its tar, then its sidecar, the commit marker as it is locally, and leaves the stage; the stage
holds the shards being written, one per worker. The lock lives in the stage, since a bucket has no flock.

Resume trusts a finished shard only after checking it against its sidecar: its size always, its sha256 unless
--resume-check size (hashed in parallel, locally from disk, remotely by reading it back). A shard that fails is
written again, in the folder or in the bucket.
"""

import fcntl
import hashlib
import os
import re
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tgprep import limits, schema
from tgprep.errors import UserError, disk_full
from tgprep.shards import SETS, ShardTask, file_sha256
from tgprep.storage.fetch import fetch
from tgprep.storage.place import Place

ROOT_FILES = ("dataset.json", "failures.jsonl", "missing.txt") + tuple(f"manifests/{name}.txt" for name in SETS)


@dataclass(frozen=True)
class Output:
    place: Place   # where the build's files end up
    stage: Path    # where they are written first: the output folder itself, or a local folder for a bucket

    @property
    def remote(self) -> bool:
        return self.place.remote

    def publish(self, *names: str) -> None:
        """Upload these stage files, in this order, and take them out of the stage (nothing to do locally)."""
        if not self.remote:
            return
        for name in names:
            self.place.put(self.stage / name, name)
        for name in names:
            (self.stage / name).unlink()

    def remove(self, name: str) -> None:
        if self.remote:
            self.place.delete(name)
        else:
            (self.stage / name).unlink(missing_ok=True)

    def finished_sizes(self) -> list[int]:
        """The bytes of each tar here that has its sidecar."""
        sizes = self.place.sizes()
        return [sizes[tar] for tar in sizes if tar.endswith(".tar") and tar[:-4] + ".json" in sizes]


def output_of(place: Place, stage: str | None) -> Output:
    """The Output that --out (as a Place) and --stage name."""
    if not place.remote:
        return Output(place, Path(place.root))
    return Output(place, Path(stage).expanduser() if stage else default_stage(place))


def default_stage(place: Place) -> Path:
    """The stage of a bucket's output on this machine: one per URL, so that two builds into it see one lock."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tgprep" / "stage" / hashlib.sha256(place.root.encode()).hexdigest()[:16]


@contextmanager
def output_lock(stage: Path, where: str | None = None):
    """Refuse a second build into the same output while one runs; the OS drops the lock if we are killed."""
    with open(stage / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{where or stage}: another tgprep build is writing here; wait for it or use another "
                            "--out") from None
        yield


def remove_temporaries(stage: Path) -> None:
    """Half-written files (tars, spooled payloads, JSON) of a run that was killed or stopped; only ever
    called under the output lock, when no worker of ours is left."""
    for stale in stage.glob("*.tmp*"):
        stale.unlink(missing_ok=True)


def clear_stage(output: Output) -> None:
    """A bucket's stage keeps nothing between runs but its lock: what a killed run had not uploaded goes (the
    bucket decides what is finished), under the lock."""
    if output.remote:  # only names a build writes: --stage may be a folder that holds other files too
        for name in [*(p.name for p in output.stage.iterdir() if p.is_file()), *ROOT_FILES[3:]]:
            if name in ROOT_FILES or re.fullmatch(rf"({'|'.join(SETS)})-[0-9]{{6,}}\.(tar|json)", name):
                (output.stage / name).unlink(missing_ok=True)


def clear_output(output: Output) -> None:
    """Remove what a build writes, and nothing else."""
    for name in output.place.sizes():
        if (name.endswith(".tar") or ".tmp" in name or name in ROOT_FILES
                or (name.endswith(".json") and name.split("-")[0] in SETS)):
            output.remove(name)
    for name in ROOT_FILES[3:]:  # the manifests, a level down
        output.remove(name)
    shutil.rmtree(output.stage / "manifests", ignore_errors=True)


def stopped(output: Output, error: OSError) -> UserError:
    """The one line for a build stopped by its output's file system (a full disk above all)."""
    if not disk_full(error):
        return UserError(f"{output.place.url()}: could not write the output: {error}")
    sizes = output.finished_sizes()
    return UserError(f"{output.stage}: {error.strerror}, with {len(sizes)} shard{'' if len(sizes) == 1 else 's'} "
                     f"({sum(sizes) / 1e6:.1f} MB) written; "
                     "free some space there and run the same command again to resume")


# -- what earlier runs finished --------------------------------------------------------------------------

def resume(output: Output, tasks: list[ShardTask], check: str, workers: int) -> tuple[list[dict], list[ShardTask]]:
    """(the sidecars of the shards that earlier runs finished for exactly these videos and whose tars still match
    them, the tasks to run). A tar that does not match loses its sidecar, so that it reads as unfinished until it is
    written again; each such shard is named on stderr."""
    sizes = output.place.sizes()
    threads = ThreadPoolExecutor(workers or os.cpu_count() or 1)
    with threads:
        sidecars = list(threads.map(lambda task: _sidecar(output, task, sizes), tasks))
        sized = [(task, side) for task, side in zip(tasks, sidecars)
                 if side is not None and sizes.get(side["shard"]) == side["bytes"]]
        matched = {task.name for task, _ in sized}
        if check == "sha256":
            matched = _hashed(output, sized, threads)
    done = [side for task, side in zip(tasks, sidecars) if task.name in matched]
    for task, side in zip(tasks, sidecars):
        if side is not None and task.name not in matched:
            size = sizes.get(side["shard"])
            why = "sha256" if size == side["bytes"] else "missing" if size is None else f"{size} bytes, not {side['bytes']}"
            print(f"note: {output.place.url(side['shard'])} does not match its sidecar ({why}); writing it again",
                  file=sys.stderr)
            output.remove(f"{task.name}.json")
    return done, [task for task in tasks if task.name not in matched]


def _sidecar(output: Output, task: ShardTask, sizes: dict) -> dict | None:
    """The sidecar an earlier run wrote for exactly this task's videos, else None (absent, damaged, not ours)."""
    name = f"{task.name}.json"
    if name not in sizes:
        return None
    try:
        sidecar = limits.parse_json(output.place.read_small(name, limits.MAX_SIDECAR_BYTES), limits.MAX_SIDECAR_BYTES)
        schema.check_sidecar(sidecar)
    except (OSError, ValueError):  # absent, damaged, too deep, not a sidecar: write it again
        return None
    done = set(sidecar["keys"]) | {f["key"] for f in sidecar["failures"]}
    same = sidecar["shard"] == f"{task.name}.tar" and done == {r.key for r in task.records}
    return sidecar if same else None


def _hashed(output: Output, sized: list, threads: ThreadPoolExecutor) -> set[str]:
    """The names of the tasks whose tar's sha256 is its sidecar's, hashed in parallel, with a bar over bytes."""
    def digest(side: dict) -> str:
        if output.remote:
            return fetch(output.place, side["shard"], None, side["bytes"])
        return file_sha256(output.stage / side["shard"])

    total = sum(side["bytes"] for _, side in sized)
    matched = set()
    with tqdm(total=total, unit="B", unit_scale=True, desc="checking finished shards", disable=None) as bar:
        for (task, side), found in zip(sized, threads.map(lambda pair: digest(pair[1]), sized)):
            bar.update(side["bytes"])
            if found == side["sha256"]:
                matched.add(task.name)
    return matched
