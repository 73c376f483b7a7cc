"""`tgprep verify`: re-read every shard and the files beside it, and say what is wrong, one line per problem."""

from pathlib import Path

from tgprep import schema
from tgprep.inspection import Shard, ShardError, iter_samples, set_name
from tgprep.locate import find_shards
from tgprep.sample import SampleError, decode_frames, read_cls
from tgprep.video_decode import check_decodes
from tgprep.video_sample import is_video, read_meta
from tgprep.shards import SETS, file_sha256
from tgprep.storage.index import Storage
from tgprep.storage.place import StorageError

MAX_PROBLEMS = 20   # verify lists this many problems, then only counts the rest

def verify(path, storage: Storage = Storage()) -> list[str]:
    """Re-read every shard under PATH (a folder or a URL) and return its problems, one line each ("shard: problem");
    [] is good.

    dataset.json (of PATH, or beside the shards) and every sidecar are checked against their schema, and every
    sample's label against dataset.json's classes. Every shard is checked to the end; past MAX_PROBLEMS the rest
    are only counted, in a last line. A URL's shards are those its dataset.json lists, fetched through the node
    cache one at a time.
    """
    shards, dataset = find_shards(path, storage)
    problems = []
    if dataset is None:  # a local path
        path = Path(path)
        root = path if path.is_dir() else Path(shards[0].where).parent
        dataset, problems = read_dataset(root)
        problems += lost_shards(root, dataset) if path.is_dir() else []
    classes = dataset["classes"] if dataset else None
    for shard in shards:
        problems += check_shard(shard, classes)
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return problems


def read_dataset(root: Path) -> tuple[dict | None, list[str]]:
    """root's dataset.json and its problem: None and [] for a folder of shards without one."""
    try:
        return schema.read_dataset(root / "dataset.json"), []
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError) as e:
        return None, [f"dataset.json: {e}; rebuild with `tgprep build`"]


def lost_shards(root: Path, dataset: dict | None) -> list[str]:
    """Shards that the output root's sidecars or dataset.json name but that are not there."""
    named = {p.with_suffix(".tar").name: p.name for name in SETS for p in root.glob(f"{name}-*.json")}
    for entry in (dataset or {}).get("shards") or []:  # None while a build is unfinished
        named.setdefault(entry["shard"], "dataset.json")
    return [f"{tar}: missing, though {by} names it; run the build again" for tar, by in sorted(named.items())
            if not (root / tar).is_file()]


def check_shard(shard: Shard, classes: list[str] | None = None) -> list[str]:
    """The problems of one shard: against its sidecar (schema, bytes, sha256, keys), and every sample read back
    whole, its label checked against classes when they are known."""
    name, side = shard.name, shard.name.removesuffix(".tar") + ".json"
    problems = []
    try:
        sidecar = shard.sidecar()
    except FileNotFoundError:
        sidecar = None
        problems.append(f"{name}: no readable sidecar {side} (the build did not finish it); run the build again")
    except (OSError, ValueError) as e:
        sidecar = None
        problems.append(f"{name}: sidecar {side}: {e}; run the build again")
    try:
        with shard.local() as tar_path:
            problems += _against_sidecar(name, tar_path, sidecar)
            keys = []
            for sample in iter_samples(tar_path, shard.where):
                keys.append(sample["__key__"])
                problems += [f"{name}: {sample['__key__']}: {p}"
                             for p in check_sample(sample, set_name(name), classes)]
    except ShardError as e:
        return problems + [f"{name}: {str(e).removeprefix(shard.where + ': ')}"]
    except StorageError as e:  # a remote shard that could not be fetched whole and as its index records it
        return problems + [str(e)]
    if sidecar is not None and keys != sidecar["keys"]:
        problems.append(f"{name}: holds {len(keys)} samples, the sidecar lists {len(sidecar['keys'])} "
                        f"({_first_difference(keys, sidecar['keys'])})")
    return problems


def _against_sidecar(name: str, tar_path: Path, sidecar: dict | None) -> list[str]:
    if sidecar is None:
        return []
    size, digest, problems = tar_path.stat().st_size, file_sha256(tar_path), []
    if size != sidecar["bytes"]:
        problems.append(f"{name}: {size} bytes, the sidecar records {sidecar['bytes']}")
    if digest != sidecar["sha256"]:
        problems.append(f"{name}: sha256 {digest[:12]}... differs from the sidecar's {sidecar['sha256'][:12]}...")
    return problems


def check_sample(sample: dict, set_name: str, classes: list[str] | None = None) -> list[str]:
    """What is wrong with one sample: missing fields, bad metadata or label, a frame that does not decode."""
    kind = ("mp4",) if is_video(sample) else ("rgb", "tg")
    needed = ("json", *kind) + (("cls",) if set_name in ("labeled", "val") else ())
    missing = [ext for ext in needed if ext not in sample]
    if missing:
        return [f"no .{', .'.join(missing)}"]
    try:
        meta = read_meta(sample, len(classes) if classes else None)
        if "cls" in sample:
            read_cls(sample, meta)
    except SampleError as e:
        return [str(e).removeprefix(f"sample {sample['__key__']}: ")]
    if classes and meta.get("class") != classes[meta["label"]]:
        return [f".json class {meta.get('class')!r} is not {classes[meta['label']]!r}, class {meta['label']} "
                "in dataset.json"]
    try:
        if is_video(sample):
            check_decodes(sample, meta)
            return []
        # reduce=8 found the same damaged JPEGs as full decoding, in half the time (measured on real HMDB
        # clips): libjpeg still parses every entropy-coded byte and skips most of the inverse DCT
        decode_frames(sample, "rgb", range(meta["frames"]), reduce=8)
        decode_frames(sample, "tg", range(meta["tg_frames"]), reduce=8)
    except SampleError as e:
        return [f"does not decode: {str(e).removeprefix('sample ' + sample['__key__'] + ': ')}"]
    return []


def _first_difference(found: list[str], listed: list[str]) -> str:
    extra = sorted(set(found) - set(listed))
    lost = sorted(set(listed) - set(found))
    if extra or lost:
        return f"not listed: {extra[:3]}, not found: {lost[:3]}"
    return "same keys in another order"
