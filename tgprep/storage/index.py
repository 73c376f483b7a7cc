"""A finished build's dataset.json as the index of its shards, the shards it lists, and the storage settings of
the command line.

The index is dataset.json itself: a finished build already lists there every shard with its set, samples,
frames, bytes and sha256, beside the classes and counts a trainer needs, and writes it last, after every sidecar.
So one GET tells a reader everything, and no second file can disagree with it. A remote reader needs it (a web
server cannot be listed); a local one may still find an old build's shards by their names.
"""

from dataclasses import dataclass
from pathlib import Path

from tgprep import limits, schema
from tgprep.storage.cache import ShardCache, default_folder, limit_from
from tgprep.storage.place import Place, Policy, StorageError, explain, place

INDEX = "dataset.json"


@dataclass(frozen=True)
class Storage:
    """What the command line says about remote places (tgprep's and tgtrain's --storage-option, --cache,
    --cache-limit); local folders ignore it."""

    options: tuple = ()           # (key, value) pairs for fsspec
    cache: str | None = None      # the node cache's folder [default: the user's cache folder]
    cache_limit: str | None = None  # e.g. 200GB, or 50% of the room on the cache's disk [default: 50%]

    def place(self, location) -> Place:
        return place(location, self.options)

    def shard_cache(self, policy: Policy = Policy()) -> ShardCache:
        """The cache with its limit worked out now, once, so that every worker of the run keeps the same one."""
        folder = Path(self.cache).expanduser() if self.cache else default_folder()
        return ShardCache(str(folder), limit_from(self.cache_limit, folder), policy)


@dataclass(frozen=True)
class RemoteShard:
    """A shard as a remote index lists it, read through the node cache. str() is its URL, for messages."""

    place: Place
    name: str
    bytes: int
    sha256: str
    cache: ShardCache

    def __str__(self) -> str:
        return self.place.url(self.name)

    def open(self) -> limits.BoundedFile:
        return self.cache.open(self.place, self.name, self.bytes, self.sha256)


def read_index(where: Place, policy: Policy = Policy()) -> dict:
    """The dataset.json of a finished build at a remote place, bounded and schema-checked like every untrusted
    JSON file; one line when it is absent, damaged, or says the build is unfinished."""
    try:
        raw = where.read_small(INDEX, limits.MAX_DATASET_JSON_BYTES, policy)
    except (FileNotFoundError, PermissionError) as e:
        raise explain(where, INDEX, e, "point at the output of a finished `tgprep build`") from None
    except ValueError as e:
        raise StorageError(f"{where.url(INDEX)}: {e}; this is not a tgprep dataset.json") from None
    try:
        index = limits.parse_json(raw, limits.MAX_DATASET_JSON_BYTES)
        schema.check_dataset(index)
    except ValueError as e:
        raise StorageError(f"{where.url(INDEX)}: {e}; rebuild with `tgprep build`") from None
    if index["status"] != "complete":
        raise StorageError(f"{where.url(INDEX)}: the build is not finished; run the same `tgprep build` command "
                           "again (it resumes), then read it")
    return index


def remote_shards(where: Place, index: dict, cache: ShardCache, set_name: str) -> list[RemoteShard]:
    """The shards of one set that hold samples, in name order."""
    return [RemoteShard(where, e["shard"], e["bytes"], e["sha256"], cache)
            for e in sorted(index["shards"], key=lambda e: e["shard"]) if e["set"] == set_name and e["samples"]]
