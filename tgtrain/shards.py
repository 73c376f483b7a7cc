"""Where a run's shards come from and how each is opened: the finished shards of a `tgprep build` output in a local
folder or at a URL (Data), remote ones brought into the node cache one ahead (fetched), and every tar then read
memory-mapped, member headers only, the same way wherever it came from (tar_samples)."""

import math
import mmap
import os
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tgprep import limits, schema
from tgprep.errors import UserError
from tgprep.sample import FIELDS, SampleError
from tgprep.storage.index import RemoteShard, Storage, read_index, remote_shards

FIX = "re-run `tgprep build` (it resumes and rewrites damaged shards), or check the output with `tgprep verify`"


class Data:
    """A `tgprep build` output to train on, a local folder or a URL (s3://, gs://, http(s)://): its dataset.json and
    the finished shards of each set. A folder's shards are its tars, each checked against its sidecar (shard_urls);
    a remote output's are those its dataset.json lists (tgprep.storage.index), read through the node cache."""

    def __init__(self, location, storage: Storage = Storage()):
        self.location, self.place = str(location), storage.place(location)
        if self.place.remote:
            self.dataset, self.cache = read_index(self.place), storage.shard_cache()
        else:
            self.dataset, self.cache = read_dataset(Path(location)), None

    def shards(self, set_name: str) -> list:
        """Local paths, or tgprep.storage.index.RemoteShard for a remote output."""
        if self.cache is None:
            return shard_urls(Path(self.location), set_name)
        found = remote_shards(self.place, self.dataset, self.cache, set_name)
        if not found:
            raise UserError(f"{self.location}: its dataset.json lists no {set_name} shard with samples; "
                            "is this the output of a finished `tgprep build`?")
        return found

    def check_cache(self, streams: int, workers: int, shuffle: int) -> None:
        """Refuse a cache limit below what this node's loaders hold at once. Each worker (or the process itself, with
        no workers) holds the shard it reads, the one it fetches ahead and those whose samples wait in its shuffle
        buffer; each of `streams` loaders open at once has `workers`; and so has every rank of this node."""
        entries = [e for e in self.dataset["shards"] or [] if e["samples"]]
        if self.cache is None or not entries:
            return
        per_worker = 1 + math.ceil(1.5 * buffer_span(shuffle, min(e["samples"] for e in entries)))
        readers = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) * streams * max(workers, 1)
        self.cache.check_room(min(len(entries), readers * per_worker), max(e["bytes"] for e in entries),
                              f"{readers} loader {'workers' if workers else 'streams'}")


def buffer_span(buffer: int, samples: int) -> float:
    """How many shards of `samples` samples a full shuffle buffer (shuffled) holds samples of, on average: a sample
    put in k samples ago is still there with probability (1 - 1/buffer)^k. 13.3 for 256 and 100 (simulated: 13.5,
    at most 18)."""
    keep, expected, shard = 1 - 1 / max(buffer, 1), 0.0, 0
    while True:
        held = 1 - math.prod(1 - keep ** k for k in range(shard * samples, (shard + 1) * samples))
        if shard and held < 1e-3:
            return expected
        expected, shard = expected + held, shard + 1


def read_dataset(root: Path) -> dict:
    try:
        return schema.read_dataset(root / "dataset.json")
    except FileNotFoundError:
        raise UserError(f"{root}: no dataset.json here; point --data at a `tgprep build` output folder") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{root / 'dataset.json'}: {e}; rebuild with tgprep build") from None


def shard_urls(data: Path, set_name: str) -> list[str]:
    """The tars of one set ("labeled", "unlabeled", "val") that tgprep build finished, checked against their
    sidecars; shards that hold no sample are left out. Any problem is a one-line UserError."""
    data = Path(data)
    if not data.is_dir():
        raise UserError(f"{data}: no such folder; give the output folder of `tgprep build`")
    urls = [str(tar) for tar in sorted(data.glob(f"{set_name}-[0-9]*.tar")) if finished_samples(tar) > 0]
    if not urls:
        raise UserError(f"{data}: no {set_name} shards ({set_name}-000000.tar ...) with samples; "
                        "is this the output folder of a finished `tgprep build`?")
    return urls


def finished_samples(tar: Path) -> int:
    """The sample count in the .json that tgprep writes after its tar, once checked to describe this very tar."""
    side = tar.with_suffix(".json")
    if not tar.is_file():  # a FIFO or a device would block the reader
        raise UserError(f"{tar}: not a regular file, so not a shard; delete it, then {FIX}")
    try:
        info = schema.read_sidecar(side)
    except FileNotFoundError:
        raise UserError(f"{tar}: no sidecar {side.name}, so the build did not finish this shard; {FIX}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{side}: not a readable shard sidecar ({e}); {FIX}") from None
    size = tar.stat().st_size
    if size != info["bytes"]:
        raise UserError(f"{tar}: {size} bytes but its sidecar says {info['bytes']}: the shard is truncated or was "
                        f"changed; delete {tar.name} and {side.name}, then {FIX}")
    return info["samples"]


# -- stream stages -----------------------------------------------------------------------------------------

def fetched(shards):
    """Shards as local files. A remote one (tgprep.storage.index.RemoteShard) comes through the node cache, and the
    shard after it is fetched in a thread while it is read, so decoding waits on the network only where the link is
    slower than the loader; its "file" is the open cache copy, locked against eviction while read. A local shard
    passes as it is."""
    pool, ahead = None, None
    try:
        for shard in shards:
            if not isinstance(shard["url"], RemoteShard):
                yield shard
                continue
            pool = pool or ThreadPoolExecutor(1, thread_name_prefix="fetch")
            following = (shard, pool.submit(shard["url"].open))
            if ahead is not None:
                yield _arrived(*ahead)
            ahead = following
        if ahead is not None:
            shard, future = ahead
            ahead = None
            yield _arrived(shard, future)
    finally:
        if ahead is not None:  # the stream stopped: the shard fetched ahead is not read now
            ahead[1].add_done_callback(_close_copy)
        if pool is not None:
            pool.shutdown(wait=False)


def _arrived(shard: dict, future) -> dict:
    try:
        copy = future.result()
    except UserError as e:  # to the loader, a shard that cannot be fetched is a shard it cannot read
        raise SampleError(str(e)) from None
    return {**shard, "url": str(shard["url"]), "file": copy}


def _close_copy(future) -> None:
    if future.exception() is None:
        future.result().close()


def tar_samples(shards):
    """The samples of local tars, in order: "__key__", "__url__", and the sample fields ("json", "cls", "rgb",
    "tg") as memoryviews of the memory-mapped tar, read only when used. Other members are skipped. A shard's tar
    is its "file" when it has one (an open cache copy: fetched), else the file at its "url"."""
    for shard in shards:
        url = shard["url"]
        try:
            yield from _mapped_samples(url, shard.get("file"))
        except (tarfile.TarError, OSError, ValueError) as e:  # ValueError: an empty file, pax numbers
            raise e if isinstance(e, SampleError) else SampleError(f"{url}: not a readable tar ({e}); {FIX}") from None


def _mapped_samples(url: str, file=None):
    with file or limits.BoundedFile(url) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        data = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))  # outlives f: mmap keeps its own fd
        sample = {}
        for member in tar:  # reads the headers only, seeking over the data
            key, _, field = member.name.partition(".")
            if not member.isfile() or field not in FIELDS:
                continue
            try:
                limits.check_member(field, member.offset_data, member.size, len(data))
            except ValueError as e:
                raise SampleError(f"{url}: member {member.name} {e}; {FIX}") from None
            if sample and key != sample["__key__"]:
                yield sample
                sample = {}
            if field in sample:
                raise SampleError(f"{url}: sample {key} has two .{field} members")
            sample.update({"__key__": key, "__url__": url, field: data[member.offset_data:][:member.size]})
        if not sample:  # resampling a shard without samples would loop forever
            raise SampleError(f"{url}: holds no sample fields (.json, .cls, .rgb, .tg); {FIX}")
        yield sample

