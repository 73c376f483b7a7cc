"""`tgprep inspect` and `tgprep verify`: find shards, read them back safely, summarise, draw and check them."""

import re
import tarfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tgprep import limits
from tgprep.errors import UserError
from tgprep.sample import FIELDS, SampleError, decode_frames, tg_from_stored
from tgprep.video_decode import clip_frames
from tgprep.video_sample import is_video, read_meta
from tgprep.locate import Shard, ShardError, as_shard, shard_paths  # noqa: F401 (shard_paths: callers find it here)
from tgprep.shards import SETS

TILE_HEIGHT = 128   # contact-sheet frames are shrunk by a whole factor to at most this height
TG_GAIN = 2         # contact-sheet TG is 128 + TG_GAIN * d: mid-grey is no change, brighter is brighter


# -- finding and reading shards ------------------------------------------------------------------------

def iter_samples(tar_path: Path, where: str | None = None) -> Iterator[dict]:
    """Every sample of a shard in tar order, as webdataset would group it: {"__key__", "json", "rgb", ...}
    with raw bytes of the sample fields (others are skipped). Nothing is decoded or unpickled. A damaged tar
    raises ShardError, naming the tar as `where` says (its URL) or else by its path."""
    for key, data, _sizes in _walk(Path(tar_path), lambda key, ext: ext in FIELDS, where):
        yield {"__key__": key, **data}


def _walk(file: Path, wanted: Callable[[str, str], bool], where: str | None = None) -> Iterator[tuple[str, dict, dict]]:
    """(key, {ext: bytes} for the members wanted(key, ext) picks, {ext: size} for all) per sample.

    Members not wanted are skipped by seeking, so a walk for the headers alone is fast. The standard
    tarfile stops quietly at a broken header after the first; the end check below turns that into an error.
    A member is read only once its size is checked against the file and tgprep.limits.
    """
    tar_path = where or str(file)  # what messages call it
    try:
        bounded = limits.BoundedFile(file)
        tar = tarfile.open(fileobj=bounded, mode="r:")
    except (tarfile.TarError, OSError, ValueError) as e:
        raise ShardError(f"{tar_path}: not a readable tar ({e}); rebuild it (run the build again)") from None
    with bounded, tar:
        key, data, sizes, seen, member = None, {}, {}, set(), None
        try:
            for member in tar:
                name_key, ext = _split_name(tar_path, member)
                if name_key != key:
                    if key is not None:
                        yield key, data, sizes
                    if name_key in seen:
                        raise ShardError(f"{tar_path}: key {name_key} appears twice (member {member.name} at "
                                         f"offset {member.offset}); rebuild the shard")
                    key, data, sizes = name_key, {}, {}
                    seen.add(key)
                sizes[ext] = member.size
                if wanted(key, ext):
                    _check_member(tar_path, member, ext, bounded.size)
                    data[ext] = tar.extractfile(member).read()
            _check_end(file, tar.offset, tar_path)
        except (tarfile.TarError, ValueError) as e:  # ValueError: pax numbers that are not numbers
            where = f"member {member.name} at offset {member.offset}" if member else "the first member"
            raise ShardError(f"{tar_path}: damaged at {where} ({e}); rebuild the shard") from None
        if key is not None:
            yield key, data, sizes


def _split_name(tar_path: str, member: tarfile.TarInfo) -> tuple[str, str]:
    """("key", "ext") from "key.ext", as webdataset splits names (at the first dot of the base name)."""
    match = re.fullmatch(r"([^.]+)\.([^/]+)", member.name)
    if not member.isfile() or match is None:
        raise ShardError(f"{tar_path}: member {member.name!r} at offset {member.offset} is not a sample field "
                         "(key.ext); this is not a tgprep shard")
    return match[1], match[2]


def _check_member(tar_path: str, member: tarfile.TarInfo, ext: str, file_size: int) -> None:
    try:
        limits.check_member(ext, member.offset_data, member.size, file_size)
    except ValueError as e:
        raise ShardError(f"{tar_path}: member {member.name} {e}; rebuild the shard") from None


def _check_end(file: Path, offset: int, tar_path: str) -> None:
    """A whole tar ends in at least two zero blocks where its last member stops."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        f.seek(offset)
        zeros = all(block.count(0) == len(block) for block in iter(lambda: f.read(1 << 20), b""))
    if size - offset < 1024 or not zeros:
        raise ShardError(f"{tar_path}: cut short or damaged after offset {offset} of {size} bytes "
                         "(no clean end of archive); rebuild the shard")


def _sidecar(shard: Shard) -> dict | None:
    """The shard's sidecar, or None when it is absent or not one (written last: no sidecar, unfinished)."""
    try:
        return shard.sidecar()
    except (OSError, ValueError):
        return None


def set_name(name: str) -> str:
    return name.rsplit("-", 1)[0]


# -- inspect: the summary --------------------------------------------------------------------------------

def summarize(paths: list) -> dict:
    """Per set and in total: shards, samples, classes, frames per video, bytes per frame, failures.

    Reads only the .json members and the tar headers (frame sizes come from the member sizes), so it is fast.
    paths: local tars or Shards.
    """
    parts: dict[str, dict] = {}
    for shard in map(as_shard, paths):
        part = parts.setdefault(set_name(shard.name), _empty_part())
        sidecar = _sidecar(shard)
        part["shards"] += 1
        part["unfinished"] += sidecar is None
        part["failures"] += len(sidecar["failures"]) if sidecar else 0
        with shard.local() as tar_path:
            part["bytes"] += tar_path.stat().st_size
            for key, data, sizes in _walk(tar_path, lambda key, ext: ext == "json", shard.where):
                _count(part, key, shard.where, data, sizes)
    sets = {name: _finish(part) for name, part in sorted(parts.items(), key=lambda kv: _set_order(kv[0]))}
    total = _empty_part()
    for part in parts.values():
        for name, value in part.items():
            total[name] += value
    return {"sets": sets, "total": _finish(total)}


def _empty_part() -> dict:
    return {"shards": 0, "unfinished": 0, "bytes": 0, "failures": 0, "classes": Counter(), "frames": [],
            "rgb_bytes": 0, "tg_bytes": 0, "tg_frames": 0, "videos": 0}


def _count(part: dict, key: str, tar_path: str, data: dict, sizes: dict) -> None:
    try:
        meta = limits.parse_json(data.get("json", b""), limits.MAX_SAMPLE_JSON_BYTES, depth=None)
        if not isinstance(meta, dict) or not isinstance(meta.get("class"), str):
            raise ValueError("no class name in it")
        frames = limits.count(meta.get("frames"), "'frames'")
        tg_frames = limits.count(meta.get("tg_frames"), "'tg_frames'")
    except ValueError as e:
        raise ShardError(f"{tar_path}: sample {key} has no readable .json ({e}); run `tgprep verify` on it") from None
    part["classes"][meta["class"]] += 1
    part["frames"].append(frames)
    part["tg_frames"] += tg_frames
    part["rgb_bytes"] += sizes.get("rgb", 0) + sizes.get("mp4", 0)  # a video sample's RGB is its .mp4
    part["videos"] += "mp4" in sizes
    part["tg_bytes"] += sizes.get("tg", 0)


def _finish(part: dict) -> dict:
    """The JSON-ready numbers of one set (or the total) from its running counts."""
    frames = np.array(part["frames"], dtype=np.int64)
    return {
        "shards": part["shards"],
        "unfinished_shards": part["unfinished"],
        "samples": len(frames),
        "frames": int(frames.sum()),
        "frames_per_video": {"min": int(frames.min()), "median": float(np.median(frames)),
                             "max": int(frames.max())} if len(frames) else None,
        "rgb_bytes_per_frame": round(part["rgb_bytes"] / max(frames.sum(), 1), 1),
        "tg_bytes_per_frame": round(part["tg_bytes"] / max(part["tg_frames"], 1), 1),
        "bytes": part["bytes"],
        "failures": part["failures"],
        "video_samples": part["videos"],
        "classes": dict(sorted(part["classes"].items())),
    }


def _set_order(name: str) -> tuple:
    return (SETS.index(name) if name in SETS else len(SETS), name)


def format_summary(summary: dict) -> str:
    """The summary as aligned text: one row per set and the total, then samples per class and set."""
    rows = {**summary["sets"], "total": summary["total"]}
    lines = [f"{'set':<10} {'shards':>6} {'samples':>8} {'classes':>7} {'frames/video min/med/max':>25} "
             f"{'RGB B/frame':>11} {'TG B/frame':>10} {'MB':>9} {'failed':>6}"]
    for name, row in rows.items():
        fpv = row["frames_per_video"]
        spread = f"{fpv['min']} / {fpv['median']:g} / {fpv['max']}" if fpv else "-"
        lines.append(f"{name:<10} {row['shards']:>6} {row['samples']:>8} {len(row['classes']):>7} {spread:>25} "
                     f"{row['rgb_bytes_per_frame']:>11.0f} {row['tg_bytes_per_frame']:>10.0f} "
                     f"{row['bytes'] / 1e6:>9.1f} {row['failures']:>6}")
    if summary["total"]["video_samples"]:
        lines.append(f"{summary['total']['video_samples']} samples hold video (.mp4, tgprep build --store video): "
                     "their RGB B/frame is the video's bytes per frame, and their TG is computed at load")
    unfinished = summary["total"]["unfinished_shards"]
    if unfinished:
        lines.append(f"{unfinished} shards have no sidecar (unfinished): their failures are not counted")
    return "\n".join(lines + [""] + _class_table(summary["sets"]))


def _class_table(sets: dict) -> list[str]:
    """Samples per class (rows) and set (columns); only a spread for many classes, to stay short."""
    classes = sorted({c for row in sets.values() for c in row["classes"]})
    width = max([len(c) for c in classes] + [5])
    if len(classes) > 60:
        return [f"{name}: {len(row['classes'])} classes, {min(row['classes'].values())} to "
                f"{max(row['classes'].values())} samples per class (--json lists them)"
                for name, row in sets.items() if row["classes"]]
    lines = [f"{'class':<{width}} " + " ".join(f"{name:>9}" for name in sets)]
    for c in classes:
        lines.append(f"{c:<{width}} " + " ".join(f"{row['classes'].get(c, 0):>9}" for row in sets.values()))
    return lines


# -- inspect --png: the contact sheet --------------------------------------------------------------------

def contact_sheet(paths: list, keys: list[str] | None = None, random_n: int | None = None,
                  seed: int = 0, frames: int = 8) -> Image.Image:
    """One block per chosen sample: a caption (key, class), a row of RGB frames at evenly spaced frame numbers
    and, below it, the TG at the same numbers (128 + TG_GAIN * d: mid-grey is no change). paths: local tars or
    Shards."""
    shards = [as_shard(p) for p in paths]
    where = {}
    for shard in shards:
        with shard.local() as tar_path:
            where.update({key: shard for key, _, _ in _walk(tar_path, lambda key, ext: False, shard.where)})
    if keys:
        unknown = [k for k in keys if k not in where]
        if unknown:
            raise UserError(f"key {unknown[0]} is in none of the {len(shards)} shards searched "
                            f"({', '.join(s.name for s in shards[:5])}{', ...' if len(shards) > 5 else ''}); "
                            "each shard's .json sidecar lists its keys")
    elif random_n:
        everything = sorted(where)
        picked = np.random.default_rng(seed).choice(len(everything), min(random_n, len(everything)), replace=False)
        keys = [everything[i] for i in sorted(picked)]
    else:
        raise UserError("say which samples to draw: keys=[...] (--key) or random_n=N (--random)")
    samples = _read_samples(keys, where)
    blocks = []
    for key in keys:
        try:
            blocks.append(_sample_block(samples[key], frames))
        except SampleError as e:
            raise ShardError(f"{where[key].where}: {e}; run `tgprep verify` on it") from None
    sheet = Image.new("RGB", (max(b.width for b in blocks), sum(b.height for b in blocks)), "black")
    top = 0
    for block in blocks:
        sheet.paste(block, (0, top))
        top += block.height
    return sheet


def _read_samples(keys: list[str], where: dict[str, Shard]) -> dict[str, dict]:
    wanted = set(keys)
    samples = {}
    for shard in sorted({where[k] for k in keys}, key=lambda s: s.where):
        with shard.local() as tar_path:
            for key, data, _ in _walk(tar_path, lambda key, ext: key in wanted, shard.where):
                if key in wanted:
                    samples[key] = {"__key__": key, **data}
    return samples


def _sample_block(sample: dict, frames: int) -> Image.Image:
    """The caption, the RGB row and the TG row of one sample."""
    meta = read_meta(sample)
    numbers = np.unique(np.linspace(0, meta["tg_frames"] - 1, frames).round().astype(int)).tolist()
    reduce = next(r for r in (1, 2, 4, 8) if meta["height"] / r <= TILE_HEIGHT or r == 8)  # libjpeg's cheap shrink
    if is_video(sample):  # decoded at full size, then shrunk as libjpeg would
        decoded = clip_frames(sample, meta, numbers)
        rgb, tg = (np.stack([np.asarray(Image.fromarray(f).reduce(reduce)) for f in decoded[m]]) for m in ("rgb", "tg"))
        tg = tg_from_stored(tg)
    else:
        rgb = decode_frames(sample, "rgb", numbers, reduce=reduce)
        tg = tg_from_stored(decode_frames(sample, "tg", numbers, reduce=reduce))
    tg = np.clip(128 + TG_GAIN * tg, 0, 255).astype(np.uint8)
    font, caption_font = ImageFont.load_default(), ImageFont.load_default(size=12)  # at 10 px a space is 2 px wide
    stored = "video (H.264)" if is_video(sample) else "frames (JPEG)"
    text = (f"{sample['__key__']} | class {meta['class']} ({meta['label']}) | {meta['frames']} frames, stored as "
            f"{stored} | RGB above, TG x{TG_GAIN} below")
    caption, (h, w) = 16, rgb.shape[1:3]
    block = Image.new("RGB", (max(w * len(numbers), round(caption_font.getlength(text)) + 8), caption + 2 * h),
                      "black")
    draw = ImageDraw.Draw(block)
    draw.text((4, 1), text, fill="white", font=caption_font)
    for i, t in enumerate(numbers):
        block.paste(Image.fromarray(rgb[i]), (i * w, caption))
        block.paste(Image.fromarray(tg[i]), (i * w, caption + h))
        draw.text((i * w + 2, caption + 1), str(t), fill="yellow", font=font, stroke_width=1, stroke_fill="black")
    return block
