"""Training speed: clips/s and peak memory of one optimisation step of each method and preset, on synthetic batches.

Run from the project root: python bench/train_step.py [--steps 4] [--hmdb51-steps 1] [--hmdb51-cpu-batch 2]
[--repeats 3] [--json PATH]

One step is what tgtrain.engine runs per batch: the method's forward (for fixmatch and ltg the strong views of the
unlabeled clips too: the step after the supervised warm-up, the dearer one), backward, clip_grad_norm_ and SGD. The
batches are random uint8 clips of the preset's shape (clip_len frames of size x size: the loader's weak views), made
here: no shards, no loader, so this measures the model alone.
clips/s = (labeled + unlabeled clips) per step / step time, the median of the timed steps after one warm-up step,
then the median over --repeats rounds, the cases taking turns (a shared machine's load comes and goes).
Each (device, method, preset) runs in a fresh subprocess of this script, so that its peak resident memory
(ru_maxrss, the largest of the rounds) is its own; on CUDA also torch.cuda.max_memory_allocated, with bf16 autocast
as the trainer uses.
"""

import argparse
import json
import tempfile
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/corpus.py, imported as a module
import corpus  # noqa: E402

from tgtrain.config import METHODS, make_config  # noqa: E402
from tgtrain.engine import device_and_autocast  # noqa: E402
from tgtrain.methods import build_method  # noqa: E402

CLASSES = 51  # HMDB-51's
PRESETS = ("hmdb51", "tiny")  # R3D-18 (ucf101 and kinetics400 run the same step) and the CPU network


def synthetic_batch(config, batch_size: int, generator) -> dict:
    """A loader's batch: uint8 (B, T, S, S, 3) RGB and TG at the preset's size, labels and hidden true labels."""
    shape = (batch_size, config.clip_len, config.size, config.size, 3)
    label = torch.randint(CLASSES, (batch_size,), generator=generator)
    return {"rgb": torch.randint(256, shape, dtype=torch.uint8, generator=generator),
            "tg": torch.randint(256, shape, dtype=torch.uint8, generator=generator),
            "label": label, "true_label": label}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(method_name: str, preset: str, device_name: str, batch_size: int, steps: int) -> dict:
    """Step times and memory of one (method, preset) on one device, in this process."""
    torch.set_num_threads(os.cpu_count())
    device, autocast = device_and_autocast(device_name)
    config = make_config(preset, method=method_name, device=device_name, batch_size=batch_size)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)  # augmentation parameters are drawn on the CPU, as in training
    method = build_method(config, CLASSES).to(device).train()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=config.momentum, weight_decay=config.weight_decay)
    labeled = {k: v.to(device) for k, v in synthetic_batch(config, batch_size, generator).items()}
    unlabeled = {k: v.to(device) for k, v in synthetic_batch(config, batch_size, generator).items()}
    rss_before = peak_rss_mib()
    times = []
    for _ in range(steps + 1):  # the first is the warm-up
        start = time.perf_counter()
        with autocast:
            loss, _ = method(labeled, unlabeled, method.uses_unlabeled, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(method.parameters(), config.clip_grad)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    clips = batch_size * (2 if method.uses_unlabeled else 1)
    step = median(times[1:])
    return {"method": method_name, "preset": preset, "device": device.type, "batch": batch_size, "clips": clips,
            "crop": config.size, "step_s": step, "clips_s": clips / step,
            "step_times": times, "rss_before_mib": rss_before, "peak_rss_mib": peak_rss_mib(),
            "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
            "threads": torch.get_num_threads()}


def in_subprocess(method: str, preset: str, device: str, batch: int, steps: int) -> dict:
    """measure() in a fresh Python, so that ru_maxrss and the CUDA peak are this case's alone."""
    command = [sys.executable, __file__, "--one", method, preset, device, str(batch), str(steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def cases(args) -> list[tuple]:
    """(method, preset, device, batch, steps): every method and preset on the CPU, and on CUDA where present.
    The CPU runs hmdb51 at a small batch (a full one takes minutes per step); CUDA at the preset's own."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.cpu_only else [])
    out = []
    for device in devices:
        for preset in PRESETS:
            big = preset != "tiny"
            batch = args.hmdb51_cpu_batch if big and device == "cpu" else make_config(preset).batch_size
            steps = args.hmdb51_steps if big and device == "cpu" else args.steps
            out += [(method, preset, device, batch, steps) for method in METHODS]
    return out


def combine(results: list[dict]) -> dict:
    """One case's rounds as one row: the median round's speed, the largest memory."""
    row = dict(sorted(results, key=lambda r: r["clips_s"])[len(results) // 2])
    row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in results)
    if row["cuda_peak_mib"] is not None:
        row["cuda_peak_mib"] = max(r["cuda_peak_mib"] for r in results)
    row["clips_s_rounds"] = [r["clips_s"] for r in results]
    return row


def report(rows: list[dict]) -> None:
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in corpus.machine().items()))
    print("| device | preset | crop | method | clips/step | step s | clips/s | peak RSS MiB | CUDA peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cuda = f"{r['cuda_peak_mib']:.0f}" if r["cuda_peak_mib"] is not None else "-"
        precision = " bf16" if r["device"] == "cuda" else ""
        print(f"| {r['device']}{precision} | {r['preset']} | {r['crop']} | {r['method']} | "
              f"{r['batch']} + {r['clips'] - r['batch']} | {r['step_s']:.3f} | {r['clips_s']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {cuda} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps after the warm-up (tiny; hmdb51 on CUDA)")
    parser.add_argument("--hmdb51-steps", type=int, default=1, help="timed steps of hmdb51 on the CPU")
    parser.add_argument("--hmdb51-cpu-batch", type=int, default=2, help="labeled clips per step of hmdb51 on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all cases; speeds are medians over them")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even where present")
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "tgprep-bench-train-step.json",
                        help="where to write the results [default: in the temporary folder]")
    parser.add_argument("--one", nargs=5, metavar=("METHOD", "PRESET", "DEVICE", "BATCH", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one case, its result as the last line of stdout
        method, preset, device, batch, steps = args.one
        print(json.dumps(measure(method, preset, device, int(batch), int(steps))))
        return
    load = os.getloadavg()
    rounds = []
    for i in range(args.repeats):
        rounds.append([in_subprocess(*case) for case in cases(args)])
        print(f"round {i + 1}: " + ", ".join(f"{r['device']} {r['preset']} {r['method']} {r['clips_s']:.1f}"
                                             for r in rounds[-1]), flush=True)
    rows = [combine(list(results)) for results in zip(*rounds)]
    report(rows)
    print(f"load average before the run: {load[0]:.2f}")
    result = {"command": ["python", "bench/train_step.py", *sys.argv[1:]], "machine": corpus.machine(),
              "torch": torch.__version__, "load_average_before": load, "settings": vars(args), "rows": rows,
              "rounds": rounds}
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
