"""A place: a local folder, s3://bucket/prefix, gs://bucket/prefix or http(s)://host/prefix/ (reading only), and
the few things the programs do there: read a small file whole, list files with their sizes, read a file's bytes
from an offset, put a finished file whole, delete one.

s3:// and gs:// go through fsspec (s3fs, gcsfs; `pip install 'tgprep[remote]'`), imported only when such a URL
is used. Endpoints and credentials come from each store's own environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID /
AWS_PROFILE; STORAGE_EMULATOR_HOST, application default credentials), so MinIO, Ceph, R2 or an emulator need
nothing else; `--storage-option key=value` pairs go to the file system as keyword arguments. http(s):// uses
tgprep.storage.http.

Errors come out as three kinds: FileNotFoundError and PermissionError (the caller knows what was missing),
Transient (another try may cure it: tgprep.storage.fetch retries those), and StorageError, one line with the fix.
"""

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from tgprep import limits
from tgprep.errors import UserError
from tgprep.storage import http
from tgprep.storage.http import Transient

LIBRARIES = {"s3": "s3fs", "gs": "gcsfs"}
WEB = ("http", "https")
CREDENTIALS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a public bucket: --storage-option anon=true)",
    "gs": "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS (a public bucket: "
          "--storage-option token=anon)",
}
UNREACHABLE = "check the server, the URL and the network, then run the command again"
# botocore's and google-auth's names for "no usable credentials", matched by name so that neither is imported here
CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                     "DefaultCredentialsError", "RefreshError")


class StorageError(UserError):
    """A place that cannot be read or written: the message names the URL, what went wrong and the fix."""


@dataclass(frozen=True)
class Policy:
    """How hard a remote read tries: each `window` bytes (and connecting) must arrive within `timeout` seconds,
    else the attempt ends; `tries` attempts in all, `backoff` * 2^n seconds apart. The defaults bound a shard that
    cannot be had to about two minutes, well under the 600 s the trainer waits for a batch."""

    tries: int = 4
    backoff: float = 1.0
    timeout: float = 30.0
    window: int = 8 << 20


@dataclass(frozen=True)
class Place:
    root: str            # a folder's path, or a URL without its trailing slash
    options: tuple = ()  # (key, value) pairs for the fsspec file system

    @property
    def scheme(self) -> str:
        return self.root.partition("://")[0] if "://" in self.root else ""

    @property
    def remote(self) -> bool:
        return bool(self.scheme)

    def url(self, name: str = "") -> str:
        """What messages call a file here."""
        if not name:
            return self.root
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    def read_small(self, name: str, limit: int, policy: Policy = Policy()) -> bytes:
        """A small file whole (dataset.json, a sidecar), refused past `limit` bytes before more is read."""
        if not self.remote:
            return limits.read_bytes(Path(self.root) / name, limit)
        data = bytearray()

        def read() -> None:
            data.clear()
            _, chunks = self.read(name, 0, limit + 1, policy)
            for chunk in chunks:
                data.extend(chunk)
                if len(data) > limit:
                    break

        retried(read, policy, self.url(name))
        limits.check_size(len(data), limit)
        return bytes(data)

    def read(self, name: str, start: int, end: int, policy: Policy) -> tuple[int, Iterator[bytes]]:
        """Bytes [start, end) of a remote file, fewer where it ends first: (the offset they begin at: start, or 0
        from a web server that ignores Range; their chunks)."""
        if self.scheme in WEB:
            return http.get(self.url(name), start, end, policy.timeout, policy.window)
        return start, self._object_chunks(name, start, end, policy)

    def _object_chunks(self, name: str, start: int, end: int, policy: Policy) -> Iterator[bytes]:
        from fsspec.asyn import sync  # a call on the file system's own loop, cancelled at its timeout

        fs, key = self._fs(), self._key(name)
        while start < end:
            want = min(policy.window, end - start)
            with self._errors(name):
                data = sync(fs.loop, fs._cat_file, key, start=start, end=start + want, timeout=policy.timeout)
            if data:
                yield data
            if len(data) < want:  # the object ends here
                return
            start += len(data)

    def sizes(self) -> dict[str, int]:
        """The files directly under this place and their sizes ({} for a folder or prefix that does not exist)."""
        if self.scheme in WEB:
            raise StorageError(f"{self.root}: a web server cannot be listed; read it through its dataset.json")
        if not self.remote:
            try:
                return {e.name: e.stat().st_size for e in os.scandir(self.root) if e.is_file()}
            except FileNotFoundError:
                return {}
        with self._errors():
            try:
                entries = self._fs().ls(self._key(""), detail=True, refresh=True)
            except FileNotFoundError:
                return {}
        return {e["name"].rsplit("/", 1)[-1]: e["size"] for e in entries if e["type"] == "file"}

    def put(self, local: Path, name: str, policy: Policy = Policy()) -> None:
        """A finished local file, whole. An object store shows it under `name` only once all of it is there:
        s3fs sends one PUT, or a multipart upload that it aborts on an error (a killed upload is never completed,
        so it is invisible); gcsfs a simple or a resumable upload, deleted on an error. Never fs.open(name, "wb"),
        whose close completes a multipart upload even after an error."""
        self._writable()
        retried(lambda: self._call(name, lambda fs, key: fs.put_file(str(local), key)), policy, self.url(name))

    def delete(self, name: str) -> None:
        self._writable()
        try:
            self._call(name, lambda fs, key: fs.rm_file(key))
        except FileNotFoundError:
            pass

    def check_bucket(self) -> None:
        """Refuse a bucket that does not exist or cannot be reached, in one line, before any work."""
        self._writable()
        bucket = self._key("").split("/", 1)[0]
        try:
            with self._errors():
                found = self._fs().exists(bucket)
        except Transient as e:
            raise StorageError(f"{self.root}: cannot reach the store ({e}); check AWS_ENDPOINT_URL or "
                               "STORAGE_EMULATOR_HOST and the network") from None
        if not found:
            raise StorageError(f"{self.root}: the bucket {bucket} does not exist or is not yours; create it "
                               f"(e.g. `aws s3 mb {self.scheme}://{bucket}`) or give another URL")

    def _writable(self) -> None:
        if self.scheme in WEB:
            raise StorageError(f"{self.root}: a web server is for reading; write to a folder, s3:// or gs://")

    def _call(self, name: str, action: Callable):
        with self._errors(name):
            return action(self._fs(), self._key(name))

    def _key(self, name: str) -> str:
        path = self.root.partition("://")[2]
        return f"{path}/{name}" if name else path

    def _fs(self):
        options = _nested(self.options)
        try:
            import fsspec

            return fsspec.filesystem(self.scheme, **options)
        except ImportError:
            raise StorageError(f"{self.root}: {self.scheme}:// needs fsspec and {LIBRARIES[self.scheme]}: "
                               "pip install 'tgprep[remote]'") from None
        except (TypeError, ValueError) as e:
            raise StorageError(f"{self.root}: the file system refused --storage-option {options}: {e}") from None

    @contextmanager
    def _errors(self, name: str = ""):
        """The file system's errors as this module's three kinds."""
        try:
            yield
        except (FileNotFoundError, PermissionError, StorageError, Transient):
            raise
        except Exception as e:  # s3fs, gcsfs, aiohttp and botocore raise many types; what is not known is retried
            if type(e).__name__ in CREDENTIAL_ERRORS:
                raise StorageError(f"{self.url(name)}: no usable credentials ({e}); "
                                   f"{CREDENTIALS[self.scheme]}") from None
            raise Transient(f"{type(e).__name__}: {e}") from None


def place(location, options=()) -> Place:
    """The Place a command-line location names: a folder, or a URL of a scheme we know."""
    text = str(location)
    if "://" not in text:
        return Place(str(Path(text)))
    scheme, _, rest = text.partition("://")
    if scheme not in (*LIBRARIES, *WEB) or not rest.strip("/"):
        raise StorageError(f"{text}: give a folder, s3://bucket/prefix, gs://bucket/prefix or http(s)://host/prefix/")
    return Place(f"{scheme}://{rest.rstrip('/')}", tuple(options))


def retried(action: Callable, policy: Policy, where: str):
    """action(), tried again after a Transient failure, `policy.tries` times in all with growing pauses; then one
    line naming `where`."""
    for attempt in range(policy.tries):
        try:
            return action()
        except Transient as e:
            if attempt + 1 == policy.tries:
                raise StorageError(f"{where}: {e}, after {policy.tries} tries; {UNREACHABLE}") from None
            time.sleep(policy.backoff * 2 ** attempt)


def explain(place: Place, name: str, error: OSError, fix: str) -> StorageError:
    """One line for a final error at place/name: what the store said, and `fix`."""
    if isinstance(error, FileNotFoundError):
        said = str(error) if "bucket" in str(error) else "not found"
    elif isinstance(error, PermissionError):
        said = f"{error}; check the credentials ({CREDENTIALS.get(place.scheme, 'the server')}) and access rights"
    else:
        said = str(error)
    return StorageError(f"{place.url(name)}: {said}; {fix}")


def _nested(pairs) -> dict:
    """--storage-option pairs as keyword arguments: a.b=v sets {"a": {"b": v}}; true, false and numbers typed."""
    options: dict = {}
    for key, value in pairs:
        *outer, last = key.split(".")
        target = options
        for part in outer:
            target = target.setdefault(part, {})
        target[last] = _typed(value)
    return options


def _typed(value: str):
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
