"""The node's cache of remote shards: whole, checked copies in one local folder, shared by every rank and loader
worker of the machine, kept under a byte limit.

- A copy is named by its sha256 (`<sha256>.tar`): the same bytes under two names or in two datasets are one copy,
  and a rebuilt shard never meets a stale copy.
- One process fetches a shard while any other that wants it waits on the shard's lock (`<sha256>.lock`, flock), so
  a shard is downloaded once per node whatever the number of ranks and workers. It is written under a temporary
  name and renamed once checked (tgprep.storage.fetch): no reader ever sees part of one.
- A reader holds a shared flock on its copy while it reads: the lock belongs to the open file, and the memory map
  that tgtrain reads through keeps that open (CPython's mmap holds a duplicate of the descriptor), so the lock
  lasts exactly as long as any sample of the shard can still be read. Eviction takes an exclusive lock without
  waiting and skips a copy it cannot lock: it never removes a shard that a worker is reading.
- Before a fetch, the least recently used copies are removed until the new one fits under the limit. Only copies in
  this folder are ever removed. Shards that readers hold count against the limit and cannot be removed, so a limit
  must hold at least what they hold at once (check_room).
"""

import fcntl
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tgprep import limits
from tgprep.errors import disk_full
from tgprep.storage.fetch import fetch
from tgprep.storage.place import Place, Policy, StorageError


@dataclass(frozen=True)
class ShardCache:
    folder: str
    limit: int                  # bytes
    policy: Policy = Policy()   # how hard each fetch tries

    def open(self, place: Place, name: str, size: int, sha256: str) -> limits.BoundedFile:
        """The local copy of place/name, fetched first if this node has none: an open file whose shared lock keeps
        the copy from eviction until it, and every memory map of it, is closed."""
        folder = made(Path(self.folder))
        copy = self.copy(sha256)
        held = _pinned(copy, size)
        if held is None:
            with _locked(folder / f"{sha256}.lock"):  # another process may be fetching it: wait, then take its copy
                held = _pinned(copy, size) or self._fetch(place, name, size, sha256, copy)
        return held

    def copy(self, sha256: str) -> Path:
        """Where the copy of the shard with this sha256 is, while one of its readers holds it open."""
        return Path(self.folder) / f"{sha256}.tar"

    def used(self) -> int:
        """Bytes in the folder's copies and in the fetches under way."""
        return sum(size for _, _, size in _files(Path(self.folder)))

    def check_room(self, shards: int, largest: int, who: str) -> None:
        """Refuse, in one line, a limit below `shards` shards of `largest` bytes: what `who` read at once."""
        need = shards * largest
        if need > self.limit:
            raise StorageError(f"--cache-limit {human(self.limit)} cannot hold the {shards} shards that {who} read "
                               f"at once (up to {human(largest)} each); give --cache-limit {human(need)} or more, "
                               "or fewer --workers")

    def _fetch(self, place: Place, name: str, size: int, sha256: str, copy: Path) -> limits.BoundedFile:
        self._make_room(size)
        temporary = copy.with_name(f"{copy.name}.tmp-{uuid.uuid4().hex[:12]}-{os.getpid()}")
        try:
            fetch(place, name, temporary, size, sha256, self.policy)
            held = limits.BoundedFile(temporary)
            fcntl.flock(held.fileno(), fcntl.LOCK_SH)  # held before the rename: no eviction can come between
            os.replace(temporary, copy)
            return held
        except OSError as e:
            if not disk_full(e):
                raise
            raise StorageError(f"{self.folder}: {e.strerror} while fetching {place.url(name)}; give a smaller "
                               "--cache-limit, or --cache on a disk with more room") from None
        finally:
            temporary.unlink(missing_ok=True)

    def _make_room(self, size: int) -> None:
        """Remove the least recently used copies that no one reads until `size` more bytes fit under the limit."""
        folder = Path(self.folder)
        with _locked(folder / ".lock"):
            files = _files(folder)
            used = sum(n for _, _, n in files)
            for _, path, n in sorted(f for f in files if f[1].suffix == ".tar"):
                if used + size <= self.limit:
                    return
                if _evict(path):
                    used -= n


def default_folder() -> Path:
    """Where the cache lives unless --cache says: the user's cache folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tgprep" / "shards"


def limit_from(text: str | None, folder: Path) -> int:
    """--cache-limit as bytes: a size (e.g. 200GB, 1.5TiB, 500M) or a share of the room the cache may use, the disk's
    free space plus what the cache holds (e.g. 50%, the default)."""
    text = (text or "50%").strip()
    if text.endswith("%"):
        made(folder)
        room = shutil.disk_usage(folder).free + ShardCache(str(folder), 0).used()
        return int(room * _number(text[:-1], text) / 100)
    return size_from(text)


UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
         "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def size_from(text: str) -> int:
    number = text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ").strip()
    unit = text[len(number):].strip().lower()
    if unit not in UNITS:
        raise StorageError(f"--cache-limit {text}: give a size such as 200GB, 1.5TiB or 500M, or a share such as 50%")
    return int(_number(number, text) * UNITS[unit])


def human(size: int) -> str:
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{size}B"


def made(folder: Path) -> Path:
    """The cache folder, made if missing; one line if it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"{folder}: {e.strerror}; give --cache a folder on a local disk that you can write") from None
    return folder


def _number(text: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise StorageError(f"--cache-limit {whole}: give a size such as 200GB, 1.5TiB or 500M, or a share such as 50%")
    return value


def _pinned(copy: Path, size: int) -> limits.BoundedFile | None:
    """The copy, open under a shared lock, or None if there is none (or it was evicted while we opened it)."""
    try:
        held = limits.BoundedFile(copy)
    except FileNotFoundError:
        return None
    fcntl.flock(held.fileno(), fcntl.LOCK_SH)  # waits only for an eviction under way
    if os.fstat(held.fileno()).st_nlink == 0 or held.size != size:
        held.close()
        return None
    os.utime(held.fileno())  # recently used: evicted last
    return held


def _files(folder: Path) -> list[tuple[float, Path, int]]:
    """(last use, path, bytes) of the copies and of the fetches under way; a fetch whose process died is removed."""
    found = []
    for entry in os.scandir(folder) if folder.is_dir() else ():
        if entry.name.endswith(".tar") or ".tar.tmp-" in entry.name:
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            path = Path(entry.path)
            if ".tar.tmp-" in entry.name and _abandoned(path):
                path.unlink(missing_ok=True)
                continue
            found.append((stat.st_mtime, path, stat.st_size))
    return found


def _abandoned(temporary: Path) -> bool:
    """Whether no process fetches into this temporary file: its shard's lock is free."""
    lock = temporary.with_name(temporary.name.split(".tar.tmp-")[0] + ".lock")
    try:
        with open(lock, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except BlockingIOError:
        return False
    except FileNotFoundError:
        return True


def _evict(path: Path) -> bool:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a worker reads it
            return False
        path.unlink(missing_ok=True)
        return True


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield
