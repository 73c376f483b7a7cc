"""Loader speed: training clips/s of tgtrain's stream beside the paper's JPEG folders, PyAV and the decode limit.

Run from the project root: python bench/loader.py [--frames 3000] [--workers 2] [--batch 8] [--work DIR] [--json PATH]
(the paper's folders need the bench extra: pip install -e '.[bench]')

The corpus is bench/corpus.py's (imported from this folder: bench/ is a folder of scripts, not a package), at native
size. One clip is 8 RGB + 8 TG frames, 8 apart, looping on short videos; every way but the limit delivers uint8
(B, 8, S, S, 3) tensors of the weak view (tgtrain.clips: a random resized crop over the whole frame, resized to
S = --size, flipped half of the time, the same for RGB and TG), through a DataLoader with the same workers and batch
size: what a training process receives.
  ours:    tgtrain.data.train_stream over the shards of tgprep.build.build (training videos: labeled + unlabeled);
  reduced: the same at a smaller --small crop, decoding the JPEGs at reduced scale (tgtrain.clips.choose_reduce);
  (a) folders: the paper's own tools (bench/paper_tools.py): the img_00001.jpg ... and tempgrad_00001.jpg ...
      folders of its two passes, read with cv2.imread by a map-style Dataset, as the reference trains;
  (b) PyAV: the original videos decoded from the start up to the last needed frame, TG computed on the fly;
  limit:   16 decodes of in-memory JPEGs (the shards' own frames, 4:2:0 as they are stored) per clip with our codec
           (simplejpeg), nothing else;
  limit, shared: the same, its batches handed over as ours are (tgtrain.shared_batches). Every other way hands
           them over as torch does by default, in a new shared-memory file per tensor, which costs the worker
           about 24 ms of CPU per batch of 8 clips at 224: the strict limit of our loader is this row.
Every way sees the same training videos. Clips/s are medians over --repeats rounds, the ways taking turns;
each round times --batches batches after the workers have delivered their first. Clips per CPU second count the
workers' CPU time and this process's over the same batches (from /proc): the machine may be shared with other
work, and that ratio suffers less from it.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median

import av
import numpy as np
import simplejpeg
import torch
from av.video.reformatter import VideoReformatter
from torch.utils.data import Dataset, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/'s scripts, imported as modules
import corpus  # noqa: E402
from measure import clips_per_second  # noqa: E402
import paper_tools  # noqa: E402
import prep  # noqa: E402

from tgprep.build import build  # noqa: E402
from tgprep.config import BuildConfig  # noqa: E402
from tgprep.sample import read_meta  # noqa: E402
from tgtrain.clips import choose_reduce, crop_box, resized_crop, train_indices  # noqa: E402
from tgtrain import shared_batches  # noqa: E402
from tgtrain.data import shard_urls, tar_samples, train_stream, worker  # noqa: E402

CLIP_LEN, INTERVAL = 8, 8
TARGET_FOLDERS, TARGET_PYAV, TARGET_LIMIT = 1.5, 2.0, 0.95  # ours >= 1.5x (a), >= 2x (b), >= 0.95x the limit


# -- the other loaders: one random video and clip at a time, batched like ours --------------------------------

class ClipStream(IterableDataset):
    """Endless batches of clip_fn(item, rng) over items drawn at random, `batches` per worker per pass, handed to
    the training process as torch does by default (a new shared-memory file per tensor), or when `shared` as
    ours are (tgtrain.shared_batches: slots of shared memory used again)."""

    def __init__(self, items: list, clip_fn, batch_size: int, batches: int, seed: int = 0, shared: bool = False):
        self.items, self.clip_fn, self.batch_size, self.batches, self.seed = items, clip_fn, batch_size, batches, seed
        self.shared = shared

    def __iter__(self):
        number, workers = worker()
        rng = np.random.default_rng([self.seed, number])
        for _ in range(self.batches // workers):
            clips = [self.clip_fn(self.items[rng.integers(len(self.items))], rng) for _ in range(self.batch_size)]
            if self.shared:
                yield shared_batches.batch({m: [torch.from_numpy(c[m]) for c in clips] for m in ("rgb", "tg")}, {})
            else:
                yield {m: torch.from_numpy(np.stack([c[m] for c in clips])) for m in ("rgb", "tg")}


def weak_view(frames: dict[str, np.ndarray], size: int, rng) -> dict[str, np.ndarray]:
    """The training stream's weak view of decoded frames: one box and flip for RGB and TG."""
    box, flip = crop_box(*frames["rgb"].shape[1:3], rng), rng.random() < 0.5
    return {m: resized_crop(f, box, size, flip) for m, f in frames.items()}


class FolderDataset(Dataset):
    """(a): the reference's way, a map-style Dataset of clips from the paper's folders; the DataLoader batches it.
    Item k is a random clip of a random video, drawn from the seed and k."""

    def __init__(self, folders: list[tuple[Path, int]], size: int, length: int, seed: int = 0):
        self.folders, self.size, self.length, self.seed = folders, size, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict:
        rng = np.random.default_rng([self.seed, k])
        folder, frames = self.folders[rng.integers(len(self.folders))]
        numbers = train_indices(frames - 1, CLIP_LEN, INTERVAL, rng) + 1  # tempgrad_i pairs img_i and img_i+1
        return {m: torch.from_numpy(np.ascontiguousarray(f))
                for m, f in weak_view(paper_tools.read_clip(folder, numbers), self.size, rng).items()}


class PyAVClip:
    """(b): a clip decoded from the original video, its TG stored as ours are (clip(d, -128, 127) + 128)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, item: tuple[Path, int], rng) -> dict:
        path, frames = item
        indices = train_indices(frames - 1, CLIP_LEN, INTERVAL, rng)
        wanted = set(indices.tolist()) | set((indices + 1).tolist())
        decoded, scaler = {}, VideoReformatter()  # one libswscale context per video (to_ndarray makes one a frame)
        with av.open(str(path)) as container:
            container.streams.video[0].thread_count = 1  # the workers are the parallelism, as in ours
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    decoded[i] = scaler.reformat(frame, format="rgb24", threads=1).to_ndarray()
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
        frames = np.stack([simplejpeg.decode_jpeg(item[i])[:self.size, :self.size] for i in picked])
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


def training_videos(shards: Path, corpus: Path, folders: Path, counts: dict[str, int]) -> list[tuple[Path, Path, int]]:
    """(video, its folder, frames) of every video in the training shards, from the build's manifests."""
    names = [line.split()[0] for s in ("labeled", "unlabeled")
             for line in (shards / "manifests" / f"{s}.txt").read_text().splitlines() if line.strip()]
    return [(corpus / n, folders / Path(n).with_suffix(""), counts[n]) for n in sorted(names)]


def ways(args, urls, videos, limit_jpegs) -> dict:
    """{way: a function of no arguments returning (clips/s, clips per CPU s)}, each making its stream afresh."""
    total = args.batches + args.workers  # the first batch of each worker is not timed
    size, small, timed = args.size, args.small, (args.workers, args.batches, args.batch)

    def ours(square):  # reduce None: per video, the largest DCT reduction that keeps its short side >= square
        return train_stream(urls, batch_size=args.batch, clip_len=CLIP_LEN, interval=INTERVAL, size=square,
                            labeled=False, epoch_batches=total, seed=0)

    folders = [(f, n) for _, f, n in videos]
    originals = [(v, n) for v, _, n in videos]
    enough = (total + 4 * max(args.workers, 1)) * args.batch  # what the workers may prefetch besides
    return {
        "ours": lambda: clips_per_second(ours(size), *timed),
        "reduced": lambda: clips_per_second(ours(small), *timed),
        "folders": lambda: clips_per_second(FolderDataset(folders, size, enough), *timed),
        "pyav": lambda: clips_per_second(ClipStream(originals, PyAVClip(size), args.batch, total), *timed),
        "limit": lambda: clips_per_second(ClipStream(limit_jpegs, JpegLimit(size), args.batch, total), *timed),
        "limit_shared": lambda: clips_per_second(ClipStream(limit_jpegs, JpegLimit(size), args.batch, total,
                                                            shared=True), *timed),
    }


# -- the report -----------------------------------------------------------------------------------------------

ROWS = [("limit", "decode limit: 16 simplejpeg decodes per clip, in memory"),
        ("limit_shared", "decode limit, handed over in shared slots as ours"),
        ("ours", "ours: tgtrain train_stream over the shards"),
        ("reduced", "ours, reduced: smaller crop, DCT-scaled decoding"),
        ("folders", "(a) the paper's folders: cv2.imread, map-style Dataset"),
        ("pyav", "(b) PyAV decode of the videos, TG on the fly")]


def report(rates: dict[str, list[tuple[float, float]]], args, videos: int, frames: int) -> tuple[dict, list[str]]:
    table = {way: {"clips_s": median(r[0] for r in runs), "clips_per_cpu_s": median(r[1] for r in runs),
                   "all": runs} for way, runs in rates.items()}
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in corpus.machine().items()))
    print(f"{videos} training videos, {frames} frames, native size; {args.workers} workers, batch {args.batch}, "
          f"{args.batches} batches timed, medians of {args.repeats} interleaved rounds; x = ratio of clips/s")
    print("| loader | weak view | clips/s | x ours | clips per CPU s | x ours per CPU s |")
    print("| --- | --- | --- | --- | --- | --- |")
    ours, ours_cpu = table["ours"]["clips_s"], table["ours"]["clips_per_cpu_s"]
    for way, name in ROWS:
        side = args.small if way == "reduced" else args.size
        r, c = table[way]["clips_s"], table[way]["clips_per_cpu_s"]
        print(f"| {name} | {'-' if way.startswith('limit') else side} | {r:.1f} | {r / ours:.2f} | {c:.1f} | {c / ours_cpu:.2f} |")
    checks = [("(a) the paper's folders", "folders", TARGET_FOLDERS), ("(b) PyAV", "pyav", TARGET_PYAV),
              ("the decode limit", "limit", TARGET_LIMIT)]
    goals = []
    for what, way, goal in checks:
        ratio, per_cpu = ours / table[way]["clips_s"], ours_cpu / table[way]["clips_per_cpu_s"]
        goals.append(f"ours >= {goal:g}x {what}: {ratio:.2f}x in clips/s ({'met' if ratio >= goal else 'MISSED'}), "
                     f"{per_cpu:.2f}x per CPU second ({'met' if per_cpu >= goal else 'MISSED'})")
    strict = ours / table["limit_shared"]["clips_s"], ours_cpu / table["limit_shared"]["clips_per_cpu_s"]
    goals.append(f"(the limit handed over as ours are: {strict[0]:.2f}x in clips/s, {strict[1]:.2f}x per CPU second)")
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
        counts = corpus.make_corpus(work, args.frames)
        shards, folders = work / "shards", work / "folders"
        shutil.rmtree(shards, ignore_errors=True)
        build(BuildConfig(dataset="folder", root=str(work / "corpus"), out=str(shards), ratio=0.5, short_side=0,
                          videos_per_shard=10))
        videos = training_videos(shards, work / "corpus", folders, counts)
        shutil.rmtree(folders, ignore_errors=True)
        prep.in_pool(paper_tools.write_frames, [v for v, _, _ in videos], [f for _, f, _ in videos])
        prep.in_pool(paper_tools.write_tg, [f for _, f, _ in videos])
        urls = shard_urls(shards, "labeled") + shard_urls(shards, "unlabeled")
        measure = ways(args, urls, videos, shard_jpegs(urls, 32))
        rates = {way: [] for way in measure}
        for i in range(args.repeats):
            for way, fn in measure.items():
                rates[way].append(fn())
            print(f"round {i + 1}: " + ", ".join(f"{w} {r[-1][0]:.1f}" for w, r in rates.items()), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work)
    frames = sum(n for _, _, n in videos)
    table, goals = report(rates, args, len(videos), frames)
    out = args.json or work.with_name(work.name + ".json")
    result = {"command": ["python", "bench/loader.py", *sys.argv[1:]], "machine": corpus.machine(),
              "corpus": {"training_videos": len(videos), "frames": frames}, "settings": vars(args) | {
                  "work": str(args.work), "json": str(args.json)}, "clips_s": table, "targets": goals}
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
