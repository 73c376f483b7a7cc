"""Scaling: `tgprep build` wall time and peak memory for 1x, 2x and 4x the videos, and for one video of 10 s and
of 10 min. Time should grow linearly, memory not at all: a worker holds one video at a time, whatever the dataset's
size, and streams it frame by frame, whatever the video's length.

Run from the project root: python bench/scaling.py [--unit 100] [--lengths 10,600] [--repeats 3] [--work DIR]
[--json PATH]

The corpus is the synthetic motion set (tgprep synth, 160x120, 48 frames), made once for the largest size; the
smaller corpora are folder datasets of links to its first videos of every class. The long videos are ffmpeg's
testsrc2 pattern at 320x240 and 25 fps, MPEG-4 part 2 (as HMDB's), made once by the ffmpeg program; each is built
alone with --workers 1, so the build's process is the worker. Each build runs as its own
`tgprep build --dataset folder` process, timed from outside; its peak memory is the largest resident set of the
build and its workers (ru_maxrss of the children, read per build in a fresh parent).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from tgprep.synth import SynthConfig, generate
from tgprep.video import ffmpeg_exe

TGPREP = str(Path(sys.executable).with_name("tgprep"))
SIZES = (1, 2, 4)


def corpus(work: Path, unit: int) -> dict[int, Path]:
    """{multiple: root} of folder datasets of unit * multiple videos, sharing one synthetic set."""
    classes = 10
    per_class = unit * max(SIZES) // classes
    source = work / "synthetic"
    generate(source, SynthConfig(classes=classes, videos_per_class=per_class))
    roots = {}
    for multiple in SIZES:
        root = work / f"x{multiple}"
        for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("test")):
            (root / folder.name).mkdir(parents=True, exist_ok=True)
            for video in sorted(folder.glob("*.avi"))[: per_class * multiple // max(SIZES)]:
                link = root / folder.name / video.name
                if not link.exists():
                    link.symlink_to(video)
        roots[multiple] = root
    return roots


def long_video(work: Path, seconds: int) -> Path:
    """A folder dataset of one 320x240 25 fps video of `seconds`, made once."""
    path = work / f"long-{seconds}s" / "pattern" / "testsrc2.avi"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
                        "-t", str(seconds), "-c:v", "mpeg4", "-q:v", "5", str(path) + ".part.avi"], check=True)
        os.replace(str(path) + ".part.avi", path)
    return path.parents[1]


def one_build(root: Path, out: Path, *options: str) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one build, in a child interpreter so that ru_maxrss is its own."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    command = [TGPREP, "build", "--dataset", "folder", "--root", str(root), "--out", str(out), "--ratio", "0.5",
               "--overwrite", "--videos-per-shard", "25", *options]
    seconds, kb = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True,
                                 text=True).stdout.split()
    return float(seconds), int(kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unit", type=int, default=100, help="videos in the 1x corpus (a multiple of 10)")
    parser.add_argument("--lengths", default="10,600", help="seconds of the long videos, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the corpus and shards [default: temporary]")
    parser.add_argument("--json", type=Path, help="where to write the results [default: <work>.json]")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-scaling-"))
    roots = corpus(work, args.unit)
    lengths = {int(s): long_video(work, int(s)) for s in args.lengths.split(",")}
    runs, long_runs = {m: [] for m in SIZES}, {s: [] for s in lengths}
    for _ in range(args.repeats):  # the sizes take turns, so drifting load hits them alike
        for multiple, root in roots.items():
            runs[multiple].append(one_build(root, work / f"shards-x{multiple}"))
        for seconds, root in lengths.items():
            long_runs[seconds].append(one_build(root, work / f"shards-{seconds}s", "--workers", "1", "--val-fraction", "0"))
    frames = SynthConfig().frames
    rows = {m: {"videos": args.unit * m, "seconds": median(s for s, _ in r), "peak_mb": max(mb for _, mb in r)}
            for m, r in runs.items()}
    long_rows = {s: {"frames": s * 25, "seconds": median(t for t, _ in r), "peak_mb": max(mb for _, mb in r)}
                 for s, r in long_runs.items()}
    base = rows[1]["seconds"]
    print(f"machine: {os.cpu_count()} cores, python {platform.python_version()}; medians of {args.repeats}")
    print("| corpus | videos | frames | wall s | x time | frames/s | peak MB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for m, row in rows.items():
        print(f"| {m}x | {row['videos']} | {row['videos'] * frames} | {row['seconds']:.1f} | "
              f"{row['seconds'] / base:.2f} | {row['videos'] * frames / row['seconds']:.0f} | {row['peak_mb']:.0f} |")
    shortest = long_rows[min(long_rows)]["peak_mb"]
    print("\n| one 320x240 video, --workers 1 | frames | wall s | frames/s | peak MB per worker | x memory |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seconds, row in long_rows.items():
        print(f"| {seconds} s | {row['frames']} | {row['seconds']:.1f} | {row['frames'] / row['seconds']:.0f} | "
              f"{row['peak_mb']:.0f} | {row['peak_mb'] / shortest:.2f} |")
    out = args.json or work.with_suffix(".json")
    out.write_text(json.dumps({"unit": args.unit, "repeats": args.repeats, "rows": rows, "lengths": long_rows,
                               "time": time.strftime("%Y-%m-%d")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
