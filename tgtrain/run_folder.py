"""A run folder is one run's: a lock while a run writes there, no silent restart over a used one, files written
whole or not at all, and a full disk as one line that says what to do.

These are rank 0's concerns: it alone writes into the folder. Under DDP it decides, and every rank learns the
decision, so that all stop together rather than the others waiting for it in a collective.
"""

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch.distributed as dist

from tgprep.errors import UserError, disk_full

EVENTS = "events.out.tfevents.*"  # TensorBoard's event files
RUN_FILES = ("config.toml", "metrics.jsonl", "curves.png", "last.pt", "best.pt", EVENTS)  # what a run writes
LOCK = ".lock"


@contextmanager
def claimed(out: Path, resume: bool, overwrite: bool, rank: int = 0, world: int = 1):
    """The run folder, held for one run for as long as the block runs: refused (a UserError on every rank) when
    another run writes there, when it holds a run and neither --resume nor --overwrite says what to do with it,
    or when --resume has nothing to continue. With --overwrite the earlier run's files go first; leftovers of a
    run killed mid-write (*.tmp) go in any case."""
    handle, problem = None, None
    if rank == 0:
        try:
            handle, problem = _claim(out, resume, overwrite)
        except OSError as e:
            problem = f"{out}: cannot use it as a run folder ({e.strerror or e}); give another --out"
    if world > 1:
        shared = [problem]
        dist.broadcast_object_list(shared, src=0)
        problem = shared[0]
    try:
        if problem:
            raise UserError(problem) if rank == 0 else SystemExit(2)  # the line once, from rank 0
        yield
    finally:
        if handle is not None:
            handle.close()  # drops the lock


def _claim(out: Path, resume: bool, overwrite: bool):
    """(the open, locked lock file, None) or (None, the reason the folder is refused)."""
    if resume and overwrite:
        return None, "--resume continues the run in --out and --overwrite replaces it: give one of them"
    if out.exists() and not out.is_dir():
        return None, f"{out}: is a file, not a run folder; give another --out"
    if resume and not (out / "last.pt").is_file():
        return None, f"{out}: no last.pt to resume from (no epoch of a run finished there); drop --resume to start one"
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read(20).strip()
        handle.close()
        return None, (f"{out}: another tgtrain run{f' (process {holder})' if holder.isdigit() else ''} is writing "
                      "here; wait for it to finish, or give another --out")
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    found = [name for pattern in RUN_FILES for name in sorted(p.name for p in out.glob(pattern))]
    if found and not (resume or overwrite):
        handle.close()
        return None, (f"{out}: holds a run already ({', '.join(found[:4])}); --resume continues it, --overwrite "
                      "starts it again, or give another --out")
    for stale in [*out.glob("*.tmp"), *(p for pattern in RUN_FILES for p in out.glob(pattern) if overwrite)]:
        stale.unlink()
    return handle, None


def replace_atomically(path: Path, write) -> None:
    """write(tmp) writes the file's new content at a temporary name that then replaces path: a reader (or a
    resumed run) sees the old file or the new one, never half of one; on any error the temporary file is gone."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def writing(out: Path, then: str = "run the same command with --resume to continue from the last finished epoch"):
    """Writes into a folder (the run folder, by default): a full disk (or a spent quota), or any other failure to
    write, becomes one line naming the folder and what to do; `then` says what after the fix. torch.save reports a
    full disk in its own words: a RuntimeError from its zip writer (inline_container.cc)."""
    try:
        yield
    except OSError as e:
        if disk_full(e):
            raise UserError(full(out, e.strerror, then)) from None
        raise UserError(f"{e.filename or out}: cannot write it ({e.strerror or e}); check that folder, or give "
                        "another") from None
    except RuntimeError as e:
        if "inline_container" not in str(e):
            raise
        raise UserError(full(out, "torch could not write the checkpoint, as on a full disk", then)) from None


def full(out: Path, what: str, then: str) -> str:
    free = shutil.disk_usage(out).free / 1e6
    return f"{out}: {what} ({free:.1f} MB free); free some space there, then {then}"
