"""The GPU check: how fast is the training step in each execution mode, and is it fed? One run of a few minutes.

Run from the project root:
  python bench/gpu.py                       # on CUDA: the hmdb51 preset, LTG, 5 + 5 clips, bf16, every mode
  python bench/gpu.py --device cpu --preset tiny --videos 8 --workers 1,2 --steps 2    # the same, small, on a CPU

1. Step, per mode (eager; channels-last; compiled; compiled with CUDA graphs, torch.compile's "reduce-overhead"):
   tgtrain.engine.train_step of LTG after its supervised warm-up (weak and strong views of both networks, every
   loss, backward, clipping, SGD) at the preset's batch per GPU, on random uint8 batches already on the device:
   clips/s after --warmup steps (cuDNN's algorithm search, compilation: its seconds are reported), peak memory and
   the graph breaks met.
2. Loader: exactly what `tgtrain run` feeds a GPU, the run's two training streams (tgtrain.loaders.RunLoaders, a
   labeled and an unlabeled stream, each with --workers processes), over shards that tgprep builds here from PyAV-made
   videos at real frame sizes (320x240 and 340x256, kept at that size as the paper keeps HMDB-51 and UCF-101):
   clips/s for each worker count, timed after every worker has delivered once.
3. Fed, per mode: the step fed by that loader at each of --fed-workers, with the share of the time it waited on data.
4. Copy: the training process's CPU per batch to start a batch's copy to the GPU, from its page-locked slot (what
   tgtrain does) and through a copy into pinned memory first (what torch's pin_memory thread did).
Verdict per mode: fed from the smallest worker count whose fed step keeps 95 % of the step alone, else starved.
Results go to --json (written after every part, so a run cut short keeps what it measured) and to stdout as tables.
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
from tgtrain import execution  # noqa: E402
from tgtrain.config import make_config  # noqa: E402
from tgtrain.engine import StepStats, device_and_autocast, networks, pool_shards, to_device, train_step  # noqa: E402
from tgtrain.loaders import RunLoaders  # noqa: E402
from tgtrain.shards import Data  # noqa: E402
from tgtrain.methods import LTG, build_method  # noqa: E402

CLASSES = 51  # HMDB-51's
MODES = {"eager": ("off", False), "channels-last": ("off", True), "compiled": ("default", False),
         "cuda-graphs": ("reduce-overhead", False)}  # name: (compile, channels_last)
FED = 0.95  # of the step alone, for a loader to count as feeding it


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


def mode_method(config, mode: str, device):
    """LTG in one execution mode, from the same initial weights as every other mode."""
    compile, channels_last = MODES[mode]
    config = replace(config, compile=compile, channels_last=channels_last)
    torch.manual_seed(0)
    method = build_method(config, CLASSES).to(device).train()
    execution.prepare(networks(method), config.compile, config.channels_last)
    return method


def step_speed(method, config, device, autocast, steps: int, warmup: int) -> dict:
    """clips/s of train_step on device-resident batches, the warm-up's seconds (compilation), the peak memory."""
    generator = torch.Generator().manual_seed(0)
    labeled, unlabeled = (to_device(synthetic_batch(config, config.batch_size, generator), device) for _ in range(2))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    stats, began = StepStats(), time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if i == warmup:
            stats.means()  # waits for the warm-up steps
            start = time.perf_counter()
        stats.add(train_step(method, optimizer, labeled, unlabeled, True, generator, autocast, config.clip_grad))
    stats.means()  # reads the sums back: waits for the last step
    seconds = time.perf_counter() - start
    return {"clips_s": 2 * config.batch_size * steps / seconds, "step_ms": 1e3 * seconds / steps,
            "warmup_s": start - began, "graph_breaks": execution.graph_breaks()[0], **peak_memory(device)}


def run_loaders(config, root: Path, workers: int, steps: int) -> RunLoaders:
    """The run's loaders at `workers` processes per stream, each epoch `steps` batch pairs."""
    source = Data(root)
    return RunLoaders(replace(config, workers=workers), LTG, source.shards("labeled"), pool_shards(source),
                      source.shards("val"), steps, 0, len(source.dataset["classes"]))


def loader_speed(config, root: Path, workers: int, batches_per_worker: int) -> float:
    """clips/s of the trainer's (labeled, unlabeled) batch pairs with `workers` processes per stream."""
    total = batches_per_worker * workers + workers
    for i, _ in enumerate(run_loaders(config, root, workers, total).epoch()):
        if i == workers - 1:  # every worker has delivered once: started and warm
            start = time.perf_counter()
    return 2 * config.batch_size * (total - workers) / (time.perf_counter() - start)


def fed_speed(method, config, root: Path, device, autocast, workers: int, steps: int) -> dict:
    """clips/s of train_step fed by the run's loaders with `workers` processes per stream, and the share of the
    time it waited for its next batch."""
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=config.momentum)
    generator, stats, waited = torch.Generator().manual_seed(0), StepStats(), 0.0
    pairs = iter(run_loaders(config, root, workers, steps + workers).epoch())
    for i in range(steps + workers):
        asked = time.perf_counter()
        labeled, unlabeled = next(pairs)
        if i == workers:
            stats.means()
            start, waited = time.perf_counter(), 0.0
        waited += time.perf_counter() - asked
        labeled, unlabeled = to_device(labeled, device), to_device(unlabeled, device)
        stats.add(train_step(method, optimizer, labeled, unlabeled, True, generator, autocast, config.clip_grad))
    stats.means()
    seconds = time.perf_counter() - start
    return {"clips_s": 2 * config.batch_size * steps / seconds, "data_wait": waited / seconds}


def copy_cost(root: Path, config, device, batches: int) -> dict:
    """CPU ms per batch to put a batch on the device: a copy issued from its page-locked slot (what tgtrain does),
    and the copy into a pinned buffer that torch's pin_memory thread made of every batch before (the buffer
    allocated once, as torch's caching host allocator would reuse one), with its copy issued after."""
    if device.type != "cuda":
        return {}
    costs, buffers = {"slot": 0.0, "pinned copy": 0.0}, {}
    for labeled, _ in run_loaders(config, root, 2, batches).epoch():
        arrays = {k: v for k, v in labeled.items() if torch.is_tensor(v)}
        for k, v in arrays.items():  # allocated outside the timing: page-locking new memory is slow
            buffers.setdefault(k, torch.empty_like(v, pin_memory=True))
        for way in costs:
            start = time.process_time()
            if way == "slot":
                to_device(arrays, device)
            else:
                to_device({k: buffers[k].copy_(v) for k, v in arrays.items()}, device)
            costs[way] += time.process_time() - start
            torch.cuda.synchronize()
    mib = sum(v.nbytes for v in arrays.values()) / 2**20
    return {"batch_mib": mib, **{way: 1e3 * cpu / batches for way, cpu in costs.items()}}


def peak_memory(device) -> dict:
    if device.type == "cuda":
        return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "memory": "CUDA max_memory_allocated"}
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "memory": "process peak RSS"}


def verdict(step: dict, fed: dict) -> str:
    """Fed from the fewest workers that keep FED of the step alone; otherwise, whether the step waited on data
    (starved) or was slowed with its data there (the loader's processes taking the host's cores)."""
    enough = [w for w, f in sorted(fed.items()) if f["clips_s"] >= FED * step["clips_s"]]
    if enough:
        return f"fed from {enough[0]} workers per stream ({2 * enough[0]} processes) on"
    best = max(fed, key=lambda w: fed[w]["clips_s"])
    at = (f"{fed[best]['clips_s']:.0f} clips/s of the step alone's {step['clips_s']:.0f} at {best} workers per "
          f"stream, {100 * fed[best]['data_wait']:.0f} % of the time waiting on data")
    if fed[best]["data_wait"] > 1 - FED:
        return f"starved: {at}"
    return f"slowed, not starved: {at}; the loader's processes compete with the step for the host's cores"


def tables(result: dict) -> str:
    lines = [f"machine: {result['device']}; " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()),
             f"step: {result['preset']} LTG, {result['batch']} + {result['batch']} clips at {result['crop']}², "
             f"torch {result['torch']}", "",
             "| mode | clips/s | step ms | warm-up s | graph breaks | peak MiB | "
             + " | ".join(f"fed at {w} (wait)" for w in result["fed_workers"]) + " | verdict |",
             "| --- " * (7 + len(result["fed_workers"])) + "|"]
    for mode, row in result["modes"].items():
        step, fed = row["step"], row.get("fed", {})
        cells = [f"{fed[w]['clips_s']:.0f} ({100 * fed[w]['data_wait']:.0f} %)" if w in fed else "-"
                 for w in result["fed_workers"]]
        lines.append(f"| {mode} | {step['clips_s']:.1f} | {step['step_ms']:.1f} | {step['warmup_s']:.0f} | "
                     f"{step['graph_breaks']} | {step['peak_mib']:.0f} | " + " | ".join(cells)
                     + f" | {row.get('verdict', '-')} |")
    lines += ["", "| loader alone, workers per stream | clips/s |", "| --- | --- |"]
    lines += [f"| {w} ({2 * w} processes) | {c:.1f} |" for w, c in result["loader_clips_s"].items()]
    if result.get("copy"):
        c = result["copy"]
        lines += ["", f"copy of a {c['batch_mib']:.1f} MiB batch to the GPU, training-process CPU ms: from its "
                  f"page-locked slot {c['slot']:.2f}, through a pinned copy {c['pinned copy']:.2f}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="hmdb51", help="the step's model and batch [default: hmdb51]")
    parser.add_argument("--batch", type=int, help="labeled clips per step [default: the preset's batch per GPU]")
    parser.add_argument("--modes", default=",".join(MODES), help=f"execution modes, in order: {', '.join(MODES)}")
    parser.add_argument("--workers", default="1,4,8,16", help="worker counts per stream to time the loader at")
    parser.add_argument("--fed-workers", default="1,4,8", help="worker counts per stream to feed each mode at")
    parser.add_argument("--videos", type=int, default=96, help="synthetic videos to build shards of")
    parser.add_argument("--frames", type=int, default=90, help="frames per video")
    parser.add_argument("--video-sizes", default="320x240,340x256", help="WIDTHxHEIGHT of the videos, in turn")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (step and fed)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batches-per-worker", type=int, default=20, help="timed loader batches per worker")
    parser.add_argument("--budget", type=float, default=420, help="seconds after which modes not begun are skipped")
    parser.add_argument("--work", type=Path, help="folder for the videos and shards [default: a temporary one]")
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "tgprep-bench-gpu.json")
    args = parser.parse_args()
    started = time.perf_counter()
    device, autocast = device_and_autocast(args.device)
    config = make_config(args.preset, method="ltg", device=args.device, batch_size=args.batch)
    modes = args.modes.split(",")
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {', '.join(sorted(unknown))}; choose from {', '.join(MODES)}")
    fed_workers = [int(w) for w in args.fed_workers.split(",")]
    result = {"command": ["python", "bench/gpu.py", *sys.argv[1:]], "machine": corpus.machine(),
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
              "preset": config.preset, "batch": config.batch_size, "crop": config.size, "load_size": config.load_size,
              "video_sizes": args.video_sizes, "fed_workers": fed_workers, "modes": {}, "loader_clips_s": {},
              "threads": torch.get_num_threads()}

    def save(note: str) -> None:
        result["seconds"] = time.perf_counter() - started
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(note, flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        root = make_shards(args.work or Path(scratch), args.videos, args.frames, args.video_sizes.split(","))
        for w in (int(w) for w in args.workers.split(",")):
            result["loader_clips_s"][w] = loader_speed(config, root, w, args.batches_per_worker)
            save(f"loader, {w} workers per stream: {result['loader_clips_s'][w]:.1f} clips/s")
        result["copy"] = copy_cost(root, config, device, 20)
        for mode in modes:
            if time.perf_counter() - started > args.budget:
                save(f"{mode}: skipped, past the --budget of {args.budget:g} s")
                continue
            method = mode_method(config, mode, device)
            row = result["modes"][mode] = {"step": step_speed(method, config, device, autocast, args.steps,
                                                              args.warmup), "fed": {}}
            save(f"{mode}: step {row['step']['clips_s']:.1f} clips/s ({row['step']['warmup_s']:.0f} s warm-up)")
            for w in fed_workers:
                row["fed"][w] = fed_speed(method, config, root, device, autocast, w, args.steps)
                save(f"{mode}: fed at {w} workers per stream {row['fed'][w]['clips_s']:.1f} clips/s")
            row["verdict"] = verdict(row["step"], row["fed"])
            del method
    save(f"\n{tables(result)}\n{result['seconds']:.0f} s in all; wrote {args.json}")


if __name__ == "__main__":
    main()
