"""Loader speed: training clips/s of tgtrain's stream beside JPEG folders, on-the-fly PyAV decoding and the JPEG limit.

Run from the project root: python bench/loader.py [--frames 3000] [--workers 2] [--batch 8] [--work DIR] [--json PATH]

The corpus is bench/prep.py's (imported from this folder: bench/ is a folder of scripts, not a package), at native
size. One clip is 8 RGB + 8 TG frames, 8 apart, looping on short videos; every way but the limit delivers uint8
(B, 8, S, S, 3) tensors of the weak view (tgtrain.clips: a random resized crop over the whole frame, resized to
S = --size, flipped half of the time, the same for RGB and TG), through a DataLoader with the same workers and batch
size: what a training process receives.
  ours:    tgtrain.data.train_stream over the shards of tgprep.build.build (training videos: labeled + unlabeled);
  reduced: the same at a smaller --small crop, decoding the JPEGs at reduced scale (tgtrain.clips.choose_reduce);
  (a) folders: the paper's layout of prep's (b), img_00001.jpg ... and tg_00001.jpg ..., opened with Pillow;
  (b) PyAV: the original videos decoded from the start up to the last needed frame, TG computed on the fly;
  limit:   16 Pillow decodes of in-memory JPEGs (the shards' own frames) per clip, nothing else.
Every way sees the same training videos. Clips/s are medians over --repeats rounds, the ways taking turns;
each round times --batches batches after the workers have delivered their first.
"""

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import av
import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/prep.py, imported as a module
import prep  # noqa: E402

from tgprep.build import build  # noqa: E402
from tgprep.config import BuildConfig  # noqa: E402
from tgprep.sample import read_meta  # noqa: E402
from tgtrain.clips import choose_reduce, crop_box, resized_crop, train_indices  # noqa: E402
from tgtrain.data import loader, shard_urls, tar_samples, train_stream, worker  # noqa: E402

CLIP_LEN, INTERVAL = 8, 8
TARGET_FOLDERS, TARGET_PYAV, TARGET_LIMIT = 1.2, 2.0, 0.9  # ours >= 1.2x (a), >= 2x (b), >= 0.9x the limit


# -- the other loaders: one random video and clip at a time, batched like ours --------------------------------

class ClipStream(IterableDataset):
    """Endless batches of clip_fn(item, rng) over items drawn at random, `batches` per worker per pass."""

    def __init__(self, items: list, clip_fn, batch_size: int, batches: int, seed: int = 0):
        self.items, self.clip_fn, self.batch_size, self.batches, self.seed = items, clip_fn, batch_size, batches, seed

    def __iter__(self):
        number, workers = worker()
        rng = np.random.default_rng([self.seed, number])
        for _ in range(self.batches // workers):
            clips = [self.clip_fn(self.items[rng.integers(len(self.items))], rng) for _ in range(self.batch_size)]
            yield {m: torch.from_numpy(np.stack([c[m] for c in clips])) for m in ("rgb", "tg")}


def weak_view(frames: dict[str, np.ndarray], size: int, rng) -> dict[str, np.ndarray]:
    """The training stream's weak view of decoded frames: one box and flip for RGB and TG."""
    box, flip = crop_box(*frames["rgb"].shape[1:3], rng), rng.random() < 0.5
    return {m: resized_crop(f, box, size, flip) for m, f in frames.items()}


class FolderClip:
    """(a): a clip from a folder of img_XXXXX.jpg and tg_XXXXX.jpg (tg_i is the difference of img_i and img_i+1)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, item: tuple[Path, int], rng) -> dict:
        folder, frames = item
        numbers = train_indices(frames - 1, CLIP_LEN, INTERVAL, rng) + 1
        return weak_view({m: np.stack([np.asarray(Image.open(folder / f"{prefix}_{i:05d}.jpg").convert("RGB"))
                                       for i in numbers]) for m, prefix in (("rgb", "img"), ("tg", "tg"))},
                         self.size, rng)


class PyAVClip:
    """(b): a clip decoded from the original video, its TG stored as ours are (clip(d, -128, 127) + 128)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, item: tuple[Path, int], rng) -> dict:
        path, frames = item
        indices = train_indices(frames - 1, CLIP_LEN, INTERVAL, rng)
        wanted = set(indices.tolist()) | set((indices + 1).tolist())
        decoded = {}
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    decoded[i] = frame.to_ndarray(format="rgb24")
                if i == max(wanted):
                    break
        rgb = np.stack([decoded[i] for i in indices])
        nxt = np.stack([decoded[i + 1] for i in indices])
        tg = (np.subtract(nxt, rgb, dtype=np.int16).clip(-128, 127) + 128).astype(np.uint8)
        return weak_view({"rgb": rgb, "tg": tg}, self.size, rng)


class JpegLimit:
    """The limit: 16 decodes of JPEGs already in memory (frames of a random training video), no I/O; the square
    is a slice of the decoded frames (no copy) so that frames of any size >= size batch."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, item: list[bytes], rng) -> dict:
        picked = rng.integers(len(item), size=2 * CLIP_LEN)
        frames = np.stack([np.asarray(Image.open(io.BytesIO(item[i])))[:self.size, :self.size] for i in picked])
        return {"rgb": frames[:CLIP_LEN], "tg": frames[CLIP_LEN:]}


def shard_jpegs(urls: list[str], frames: int) -> list[list[bytes]]:
    """Up to `frames` RGB and TG JPEGs of each sample of the shards, as bytes, one list per video."""
    out = []
    for sample in tar_samples({"url": url} for url in urls):
        meta = read_meta(sample)
        jpegs = [bytes(sample[m][a:b]) for m in ("rgb", "tg")
                 for a, b in zip(meta[f"{m}_offsets"], meta[f"{m}_offsets"][1:])]
        out.append(jpegs[:: max(1, len(jpegs) // frames)])
    return out


# -- measuring ----------------------------------------------------------------------------------------------

def clips_per_second(stream: IterableDataset, workers: int, batches: int) -> float:
    """Clips/s of `batches` batches, once every worker has delivered its first batch."""
    it = iter(loader(stream, workers))
    for _ in range(max(workers, 1)):
        next(it)
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        clips += len(next(it)["rgb"])
    seconds = time.perf_counter() - start
    del it  # ends the workers before the next way starts
    return clips / seconds


def training_videos(shards: Path, corpus: Path, folders: Path, counts: dict[str, int]) -> list[tuple[Path, Path, int]]:
    """(video, its folder, frames) of every video in the training shards, from the build's manifests."""
    names = [line.split()[0] for s in ("labeled", "unlabeled")
             for line in (shards / "manifests" / f"{s}.txt").read_text().splitlines() if line.strip()]
    return [(corpus / n, folders / Path(n).with_suffix(""), counts[n]) for n in sorted(names)]


def ways(args, urls, videos, limit_jpegs) -> dict:
    """{way: a function of no arguments returning clips/s}, each making its stream afresh."""
    total = args.batches + args.workers  # the first batch of each worker is not timed
    size, small = args.size, args.small

    def ours(square):  # reduce None: per video, the largest DCT reduction that keeps its short side >= square
        return train_stream(urls, batch_size=args.batch, clip_len=CLIP_LEN, interval=INTERVAL, size=square,
                            labeled=False, epoch_batches=total, seed=0)

    folders = [(f, n) for _, f, n in videos]
    originals = [(v, n) for v, _, n in videos]
    return {
        "ours": lambda: clips_per_second(ours(size), args.workers, args.batches),
        "reduced": lambda: clips_per_second(ours(small), args.workers, args.batches),
        "folders": lambda: clips_per_second(ClipStream(folders, FolderClip(size), args.batch, total),
                                            args.workers, args.batches),
        "pyav": lambda: clips_per_second(ClipStream(originals, PyAVClip(size), args.batch, total),
                                         args.workers, args.batches),
        "limit": lambda: clips_per_second(ClipStream(limit_jpegs, JpegLimit(size), args.batch, total),
                                          args.workers, args.batches),
    }


# -- the report -----------------------------------------------------------------------------------------------

ROWS = [("limit", "JPEG-decode limit: 16 Pillow decodes per clip, in memory"),
        ("ours", "ours: tgtrain train_stream over the shards"),
        ("reduced", "ours, reduced: smaller crop, DCT-scaled decoding"),
        ("folders", "(a) JPEG folders, Pillow"),
        ("pyav", "(b) PyAV decode of the videos, TG on the fly")]


def report(rates: dict[str, list[float]], args, videos: int, frames: int) -> tuple[dict, list[str]]:
    table = {way: {"clips_s": median(r), "all": r} for way, r in rates.items()}
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in prep.machine().items()))
    print(f"{videos} training videos, {frames} frames, native size; {args.workers} workers, batch {args.batch}, "
          f"{args.batches} batches timed, medians of {args.repeats} rounds; x = ratio of clips/s")
    print("| loader | weak view | clips/s | x ours |")
    print("| --- | --- | --- | --- |")
    for way, name in ROWS:
        side = args.small if way == "reduced" else args.size
        r = table[way]["clips_s"]
        print(f"| {name} | {side if way != 'limit' else '-'} | {r:.1f} | {r / table['ours']['clips_s']:.2f} |")
    ours = table["ours"]["clips_s"]
    checks = [("(a) folders", ours / table["folders"]["clips_s"], TARGET_FOLDERS),
              ("(b) PyAV", ours / table["pyav"]["clips_s"], TARGET_PYAV),
              ("the JPEG-decode limit", ours / table["limit"]["clips_s"], TARGET_LIMIT)]
    goals = [f"ours >= {goal:g}x {what}: {ratio:.2f}x ({'met' if ratio >= goal else 'MISSED'})"
             for what, ratio, goal in checks]
    goals.append(f"reduced ({args.small} from {args.size}, reduce {choose_reduce(240, args.small)} on 240p frames): "
                 f"{table['reduced']['clips_s'] / ours:.2f}x ours")
    print("\n" + "\n".join(goals))
    return table, goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="corpus size, as bench/prep.py's")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=24, help="batches timed per way and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224, help="the weak view's side, as the paper's training crop")
    parser.add_argument("--small", type=int, default=112, help="the weak view's side in the reduced row")
    parser.add_argument("--work", type=Path, help="folder for the corpus and outputs, kept and reused [default: temporary]")
    parser.add_argument("--json", type=Path, help="where to write the results [default: <work>.json, beside it]")
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-loader-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        counts = prep.make_corpus(work, args.frames)
        shards, folders = work / "shards", work / "folders"
        shutil.rmtree(shards, ignore_errors=True)
        build(BuildConfig(dataset="folder", root=str(work / "corpus"), out=str(shards), ratio=0.5, short_side=0,
                          videos_per_shard=10))
        videos = training_videos(shards, work / "corpus", folders, counts)
        shutil.rmtree(folders, ignore_errors=True)
        prep.in_pool(prep.write_frames, [v for v, _, _ in videos], [f for _, f, _ in videos])
        prep.in_pool(prep.write_tg, [f for _, f, _ in videos])
        urls = shard_urls(shards, "labeled") + shard_urls(shards, "unlabeled")
        measure = ways(args, urls, videos, shard_jpegs(urls, 32))
        rates = {way: [] for way in measure}
        for i in range(args.repeats):
            for way, fn in measure.items():
                rates[way].append(fn())
            print(f"round {i + 1}: " + ", ".join(f"{w} {r[-1]:.1f}" for w, r in rates.items()), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work)
    frames = sum(n for _, _, n in videos)
    table, goals = report(rates, args, len(videos), frames)
    out = args.json or work.with_name(work.name + ".json")
    result = {"command": ["python", "bench/loader.py", *sys.argv[1:]], "machine": prep.machine(),
              "corpus": {"training_videos": len(videos), "frames": frames}, "settings": vars(args) | {
                  "work": str(args.work), "json": str(args.json)}, "clips_s": table, "targets": goals}
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
