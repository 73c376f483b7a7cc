"""Which shards a command-line PATH names, a local path or a URL, and each as a local file for the time it is read."""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import braceexpand

from tgprep import limits, schema
from tgprep.errors import UserError
from tgprep.shards import SETS
from tgprep.storage.index import INDEX, RemoteShard, Storage, read_index, remote_shards


class ShardError(UserError):
    """A tar that cannot be read to its end; the message names the shard and where reading stopped."""


@dataclass(frozen=True)
class Shard:
    """A shard as inspect and verify read it: what messages call it (its path or URL), and for a remote one the
    index's entry, which brings it into the node cache."""

    where: str
    remote: RemoteShard | None = None

    @property
    def name(self) -> str:
        return self.where.rsplit("/", 1)[-1]

    @contextmanager
    def local(self) -> Iterator[Path]:
        """The tar as a local file for the time of the block: the shard itself, or its cache copy, held."""
        if self.remote is None:
            yield Path(self.where)
            return
        with self.remote.open():
            yield self.remote.cache.copy(self.remote.sha256)

    def sidecar(self) -> dict:
        """Its sidecar, schema-checked: OSError when it cannot be read, ValueError when it is not one."""
        if self.remote is None:
            return schema.read_sidecar(Path(self.where).with_suffix(".json"))
        name = self.name.removesuffix(".tar") + ".json"
        value = limits.parse_json(self.remote.place.read_small(name, limits.MAX_SIDECAR_BYTES), limits.MAX_SIDECAR_BYTES)
        schema.check_sidecar(value)
        return value


def as_shard(shard) -> Shard:
    return shard if isinstance(shard, Shard) else Shard(str(shard))


def find_shards(path, storage: Storage = Storage()) -> tuple[list[Shard], dict | None]:
    """The shards PATH names (as shard_paths, or the same forms under a URL, found in its dataset.json) and, for
    a URL, that dataset.json."""
    where = storage.place(path)
    if not where.remote:
        return [Shard(str(p)) for p in shard_paths(Path(path))], None
    last = where.root.rsplit("/", 1)[-1]
    named = last.endswith(".tar") or "{" in last or last in SETS  # a shard, a pattern or a set under the root
    root = storage.place(where.root.rsplit("/", 1)[0]) if named else where
    index = read_index(root)
    cache = storage.shard_cache()
    names = set(braceexpand.braceexpand(last)) if named and "{" in last else {last}
    found = [Shard(str(s), s) for set_name in SETS for s in remote_shards(root, index, cache, set_name)
             if not named or s.name in names or set_name in names]
    if not found:
        raise UserError(f"{path}: no shards with samples in {root.url(INDEX)}; give an output root, a set such as "
                        "URL/labeled, a shard or a pattern such as URL/val-{000000..000003}.tar")
    return found, index


def shard_paths(path: Path) -> list[Path]:
    """The tars PATH names: one shard (x.tar), a shard set (OUT/labeled means OUT/labeled-*.tar), a brace
    pattern (OUT/val-{000000..000002}.tar) or an output root (every set)."""
    path = Path(path)
    if path.is_file():
        found = [path]
    elif path.is_dir():
        found = [p for name in SETS for p in sorted(path.glob(f"{name}-*.tar"))]
    elif "{" in str(path):
        found = [Path(p) for p in braceexpand.braceexpand(str(path)) if Path(p).is_file()]
    else:
        found = sorted(path.parent.glob(f"{path.name}-*.tar"))
    found = [p for p in found if p.is_file()]  # a FIFO named like a shard would block its reader
    if not found:
        raise UserError(f"{path}: no shards found; give a .tar, a shard set such as OUT/labeled, "
                        "a pattern such as OUT/val-{000000..000003}.tar, or an output root")
    return found


