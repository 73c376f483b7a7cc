"""The GPU check: is one GPU fed? The training step's clips/s beside the loader's, in one run of a few minutes.

Run from the project root:
  python bench/gpu.py                       # on CUDA: the hmdb51 preset, LTG, 5 + 5 clips, bf16
  python bench/gpu.py --device cpu --preset tiny --videos 8 --workers 1,2 --steps 2    # the same, small, on a CPU

1. Step: tgtrain.engine.train_step of LTG after its supervised warm-up (weak and strong views of both networks,
   every loss, backward, clipping, SGD) at the preset's batch per GPU, on random uint8 batches already on the
   device (bench/train_step.py's): clips/s after --warmup steps (cuDNN picks its algorithms), and peak memory.
2. Loader: exactly what `tgtrain run` feeds a GPU, tgtrain.engine.epoch_batches (a labeled and an unlabeled
   stream, each with --workers processes), over shards that tgprep builds here from ffmpeg-made videos at real
   frame sizes (320x240 and 340x256, kept at that size as the paper keeps HMDB-51 and UCF-101): clips/s for each
   worker count, timed after every worker has delivered once.
3. Fed: the step fed by that loader, at the smallest worker count whose loader kept up (or the largest tried).
The verdict: the GPU is starved when the loader's clips/s is below the step's; it is fed from the smallest worker
count at which the loader is at least as fast. Results go to --json and, as a table, to stdout.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/corpus.py and bench/train_step.py, as modules
import corpus  # noqa: E402
from train_step import synthetic_batch  # noqa: E402

from tgprep.build import build  # noqa: E402
from tgprep.config import BuildConfig  # noqa: E402
from tgtrain import data  # noqa: E402
from tgtrain.config import make_config  # noqa: E402
from tgtrain.shards import Data  # noqa: E402
from tgtrain.engine import (StepStats, device_and_autocast, epoch_batches, pool_shards, to_device,  # noqa: E402
                            train_step)
from tgtrain.methods import LTG, build_method  # noqa: E402

CLASSES = 51  # HMDB-51's


def make_shards(work: Path, videos: int, frames: int, sizes: list[str]) -> Path:
    """MPEG-4 videos at real frame sizes (a moving colour pattern with fresh noise in every frame, so frames do not
    compress better than camera footage), 4 class folders, built into shards at native size; half the pool labeled.
    The videos are encoded with PyAV, so a GPU machine needs no ffmpeg program."""

    def encode(i: int) -> None:
        folder = work / "videos" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = (int(side) for side in sizes[i % len(sizes)].split("x"))
        rng = np.random.default_rng(i)
        y, x = np.mgrid[0:height, 0:width]
        with av.open(str(folder / f"v{i}.avi"), "w") as container:
            stream = container.add_stream("mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt, stream.bit_rate = width, height, "yuv420p", 4_000_000
            for t in range(frames):
                pattern = np.stack([(x + 3 * t) % 256, (y + 2 * t) % 256, (x + y + 5 * t) % 256], axis=-1)
                noisy = pattern + rng.normal(0, 6, pattern.shape)
                frame = av.VideoFrame.from_ndarray(noisy.clip(0, 255).astype(np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(encode, range(videos)))
    build(BuildConfig(dataset="folder", root=str(work / "videos"), out=str(work / "shards"), ratio=0.5,
                      short_side=0, videos_per_shard=8))
    return work / "shards"


def step_speed(method, config, device, autocast, steps: int, warmup: int) -> dict:
    """clips/s of train_step on device-resident batches, and the peak memory."""
    generator = torch.Generator().manual_seed(0)
    labeled, unlabeled = (to_device(synthetic_batch(config, config.batch_size, generator), device) for _ in range(2))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    stats = StepStats()
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        stats.add(train_step(method, optimizer, labeled, unlabeled, True, generator, autocast, config.clip_grad))
    stats.means()  # reads the sums back: waits for the last step
    seconds = time.perf_counter() - start
    return {"clips_s": 2 * config.batch_size * steps / seconds, "step_s": seconds / steps, **peak_memory(device)}


def loader_speed(config, root: Path, workers: int, batches_per_worker: int) -> float:
    """clips/s of the trainer's (labeled, unlabeled) batch pairs with `workers` processes per stream."""
    dataset = json.loads((root / "dataset.json").read_text())
    total = batches_per_worker * workers + workers
    pairs = epoch_batches(replace(config, workers=workers), LTG, data.shard_urls(root, "labeled"),
                          pool_shards(Data(root)), total, 0, len(dataset["classes"]))
    for i, _ in enumerate(pairs):
        if i == workers - 1:  # every worker has delivered once: started and warm
            start = time.perf_counter()
    return 2 * config.batch_size * (total - workers) / (time.perf_counter() - start)


def fed_speed(method, config, root: Path, device, autocast, workers: int, steps: int) -> float:
    """clips/s of train_step fed by the trainer's loader with `workers` processes per stream."""
    dataset = json.loads((root / "dataset.json").read_text())
    config = replace(config, workers=workers)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=config.momentum)
    generator, stats = torch.Generator().manual_seed(0), StepStats()
    pairs = epoch_batches(config, LTG, data.shard_urls(root, "labeled"), pool_shards(Data(root)), steps + workers, 0,
                         len(dataset["classes"]))
    for i, (labeled, unlabeled) in enumerate(pairs):
        if i == workers:
            stats.means()
            start = time.perf_counter()
        labeled, unlabeled = to_device(labeled, device), to_device(unlabeled, device)
        stats.add(train_step(method, optimizer, labeled, unlabeled, True, generator, autocast, config.clip_grad))
    stats.means()
    return 2 * config.batch_size * steps / (time.perf_counter() - start)


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(device) -> dict:
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "memory": "CUDA max_memory_allocated"}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "memory": "process peak RSS"}


def verdict(step_clips_s: float, loader: dict[int, float]) -> str:
    enough = [w for w, clips_s in sorted(loader.items()) if clips_s >= step_clips_s]
    if not enough:
        return (f"starved: the step takes {step_clips_s:.0f} clips/s, the loader gives at most "
                f"{max(loader.values()):.0f} (at {max(loader, key=loader.get)} workers per stream)")
    return f"fed from {enough[0]} workers per stream ({2 * enough[0]} processes) on; starved below"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="hmdb51", help="the step's model and batch [default: hmdb51]")
    parser.add_argument("--batch", type=int, help="labeled clips per step [default: the preset's batch per GPU]")
    parser.add_argument("--workers", default="1,4,8,16", help="worker counts per stream to time the loader at")
    parser.add_argument("--videos", type=int, default=96, help="synthetic videos to build shards of")
    parser.add_argument("--frames", type=int, default=90, help="frames per video")
    parser.add_argument("--video-sizes", default="320x240,340x256", help="WIDTHxHEIGHT of the videos, in turn")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (step and fed)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batches-per-worker", type=int, default=20, help="timed loader batches per worker")
    parser.add_argument("--work", type=Path, help="folder for the videos and shards [default: a temporary one]")
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "tgprep-bench-gpu.json")
    args = parser.parse_args()
    started = time.perf_counter()
    device, autocast = device_and_autocast(args.device)
    config = make_config(args.preset, method="ltg", device=args.device, batch_size=args.batch)
    workers = [int(w) for w in args.workers.split(",")]

    torch.manual_seed(0)
    method = build_method(config, CLASSES).to(device).train()
    step = step_speed(method, config, device, autocast, args.steps, args.warmup)
    precision = " bf16" if device.type == "cuda" else ""
    print(f"step ({config.preset}, LTG, {config.batch_size} + {config.batch_size} clips, {device.type}{precision}): "
          f"{step['clips_s']:.1f} clips/s, peak {step['peak_mib']:.0f} MiB", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = make_shards(args.work or Path(scratch), args.videos, args.frames, args.video_sizes.split(","))
        loader = {}
        for w in workers:
            loader[w] = loader_speed(config, root, w, args.batches_per_worker)
            print(f"loader, {w} workers per stream: {loader[w]:.1f} clips/s", flush=True)
        chosen = next((w for w in workers if loader[w] >= step["clips_s"]), max(workers))
        fed = fed_speed(method, config, root, device, autocast, chosen, args.steps)
    result = {"command": ["python", "bench/gpu.py", *sys.argv[1:]], "machine": corpus.machine(),
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "preset": config.preset, "batch": config.batch_size, "crop": config.size, "load_size": config.load_size,
              "video_sizes": args.video_sizes, "step": step, "loader_clips_s": loader, "fed_workers": chosen,
              "fed_clips_s": fed, "verdict": verdict(step["clips_s"], loader),
              "seconds": time.perf_counter() - started, "threads": torch.get_num_threads()}
    print(f"\nmachine: {result['device']}; " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()))
    print("| what | clips/s |\n| --- | --- |")
    print(f"| step alone ({config.batch_size} + {config.batch_size}, peak {step['peak_mib']:.0f} MiB "
          f"{step['memory']}) | {step['clips_s']:.1f} |")
    for w, clips_s in loader.items():
        print(f"| loader, {w} workers per stream ({2 * w} processes), {args.video_sizes} shards | {clips_s:.1f} |")
    print(f"| step fed by the loader at {chosen} workers per stream | {fed:.1f} |")
    print(f"verdict: {result['verdict']}; {result['seconds']:.0f} s in all")
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
