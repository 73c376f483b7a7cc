"""A remote file, whole, into a new local file: a dropped transfer resumes with a Range request (or starts over
where the server ignores Range), the bytes are checked against the size and sha256 the index records, a failure is
tried again a bounded number of times with growing pauses, and a file that cannot be had is one line."""

import hashlib
import time
from contextlib import nullcontext
from pathlib import Path

from tgprep.storage.place import UNREACHABLE, Place, Policy, StorageError, Transient, explain

DIFFERS = ("it differs from what the build recorded: run the same `tgprep build` again (it rewrites a shard that "
           "does not match its sidecar), or check the output with `tgprep verify`")


class _Received:
    """The bytes of one fetch so far: the file they go to (None: hashed only), how many, their running sha256."""

    def __init__(self, file):
        self.file = file
        self.restart()

    def restart(self) -> None:
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()
        self.got, self.digest = 0, hashlib.sha256()

    def add(self, chunk: bytes) -> None:
        if self.file is not None:
            self.file.write(chunk)
        self.digest.update(chunk)
        self.got += len(chunk)


def fetch(place: Place, name: str, dest: Path | None, size: int, sha256: str | None = None,
          policy: Policy = Policy()) -> str:
    """Copy place/name into the new file dest (None: only hash it): exactly `size` bytes, with this sha256 when
    given. Returns the sha256 of the bytes. StorageError (one line, the URL and the fix) once policy.tries attempts
    have failed."""
    problem, fix = "", UNREACHABLE
    with open(dest, "xb") if dest is not None else nullcontext() as out:
        received = _Received(out)
        for attempt in range(policy.tries):
            if attempt:
                time.sleep(policy.backoff * 2 ** (attempt - 1))
            try:
                _copy(place, name, received, size, policy)
            except Transient as e:  # the next attempt resumes from what came
                problem, fix = f"{e} (at byte {received.got} of {size})", UNREACHABLE
                continue
            except (FileNotFoundError, PermissionError) as e:
                raise explain(place, name, e, "check the URL, or point at the output of a finished `tgprep build`") \
                    from None
            digest = received.digest.hexdigest()
            if received.got == size and sha256 in (None, digest):
                return digest
            if received.got != size:
                problem = f"{'more' if received.got > size else f'only {received.got}'} bytes where {size} were recorded"
            else:
                problem = f"sha256 {digest[:12]}... where {sha256[:12]}... was recorded"
            fix = DIFFERS
            received.restart()
    raise StorageError(f"{place.url(name)}: {problem}, after {policy.tries} tries; {fix}")


def _copy(place: Place, name: str, received: _Received, size: int, policy: Policy) -> None:
    """One attempt: the bytes from where the last one stopped, and at most one past `size` (to see a longer file)."""
    begin, chunks = place.read(name, received.got, size + 1, policy)
    if begin != received.got:  # the server sent the file from its start
        received.restart()
    for chunk in chunks:
        received.add(chunk[:size + 1 - received.got])
        if received.got > size:
            return
