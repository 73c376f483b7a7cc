"""Where a build's time goes: milliseconds per frame for each stage of one in-process build; and which way of
making JPEG's planes from a limited-range frame costs least.

Run from the project root: python bench/stages.py [--short-side 0] [--repeats 3] [--work DIR]

The corpus: the real HMDB-51, UCF-101 and Kinetics-400 clips of ../shared/realdata as a folder dataset of links.
The build is tgprep.build.build() itself, its shard tasks run in this process (not in worker processes, whose
timers would be lost with them), with the function of each stage wrapped in a timer:
  decode     VideoStream._decode: demuxing and decoding one frame (PyAV, one thread), and its time
  planes     VideoStream._picture: the decoder's planes made JPEG's (tgprep.planes: a range table here), upright
  TG         planes.difference: TG's planes, int16 arithmetic, no floats
  RGB JPEG   sample._jpeg of a frame's planes (libjpeg-turbo through simplejpeg, 4:2:0, no colour conversion)
  TG JPEG    sample._jpeg of TG's planes (the same)
  tar write  shards.add_sample: copying a sample's members into its tar
  other      the rest of build(): scanning, the plan, manifests, sidecars, Python between the stages
Every figure is divided by the frames decoded (with no --fps, every frame is stored: TG has one frame fewer per
video). CPU time (this process's), so that other work on the machine does not count; medians over --repeats
builds. "all" is the whole build's CPU time, which the timers cannot overstate.

The second table: the three ways of turning a limited-range yuv420p frame (every clip here) into JPEG's planes at
its own size, each over the first 100 frames of every clip, medians of --repeats interleaved rounds: the table
lookup the build uses, libswscale's range conversion through PyAV, and the decoder's planes as they are (what a
full-range source costs), with RGB through libswscale beside them.
"""

import argparse
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

import tgprep.build
import tgprep.planes
import tgprep.sample
import tgprep.shards
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.video import TAG_DECODING, VideoStream

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
STAGES = ("decode", "planes", "TG", "RGB JPEG", "TG JPEG", "tar write", "other")


def corpus(work: Path) -> Path:
    root = work / "corpus"
    for video in sorted(p for d in ("hmdb51", "ucf101", "kinetics400") for p in (VIDEOS / d).rglob("*")
                        if p.suffix in (".avi", ".mp4")):
        link = root / video.parent.name / video.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(video)
    return root


class InProcess:
    """An executor that runs each shard task here, one after the other."""

    def run(self, work, tasks: list, progress) -> list:
        return [work(task, progress) for task in tasks]


def instrument(seconds: dict) -> None:
    """Wrap each stage's function (where its callers look it up) so that its time adds to seconds[stage]."""

    def timed(function, stage_of):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage_of(*args)] += time.process_time() - start
        return wrapper

    VideoStream._decode = timed(VideoStream._decode, lambda *_: "decode")
    VideoStream._picture = timed(VideoStream._picture, lambda *_: "planes")
    difference, tg_pictures = timed(tgprep.planes.difference, lambda *_: "TG"), set()

    def marked(*args):  # so that the two encodes tell apart
        picture = difference(*args)
        tg_pictures.add(id(picture))
        return picture

    tgprep.planes.difference = marked
    tgprep.sample._jpeg = timed(tgprep.sample._jpeg, lambda picture, _: "TG JPEG" if id(picture) in tg_pictures
                                and not tg_pictures.discard(id(picture)) else "RGB JPEG")
    tgprep.shards.add_sample = timed(tgprep.shards.add_sample, lambda *_: "tar write")
    tgprep.build.executor = lambda config: InProcess()


def conversions(root: Path, repeats: int) -> tuple[dict[str, float], int]:
    """CPU ms per frame of each way to JPEG's planes from the clips' limited-range frames (see the docstring)."""
    frames = []
    for video in sorted(root.glob("*/*")):
        with av.open(str(video), **TAG_DECODING) as container:
            frames += [frame for _, frame in zip(range(100), container.decode(video=0))]
    scaler, tables = VideoReformatter(), (tgprep.planes.Y_TABLE, tgprep.planes.C_TABLE, tgprep.planes.C_TABLE)
    ways = {
        "range table, two bytes a lookup, into a Picture (the build's)":
            lambda f: tgprep.planes.PlaneConverter((f.width, f.height), 0)(f, 0.0),
        "range table, a byte a lookup (np.take)": lambda f: [np.take(t, p) for t, p in zip(
            tables, tgprep.planes.plane_views(f))],
        "libswscale range conversion (PyAV reformat)": lambda f: tgprep.planes.plane_views(scaler.reformat(
            f, format="yuv420p", dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.JPEG, threads=1)),
        "none: the decoder's planes (a full-range source)": tgprep.planes.plane_views,
        "RGB through libswscale (the RGB path)": lambda f: scaler.reformat(f, format="rgb24", threads=1).to_ndarray(),
    }
    rounds = {way: [] for way in ways}
    for _ in range(repeats):
        for way, convert in ways.items():
            start = time.process_time()
            for frame in frames:
                convert(frame)
            rounds[way].append((time.process_time() - start) / len(frames) * 1000)
    return {way: median(times) for way, times in rounds.items()}, len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-side", type=int, default=0, help="as tgprep build's [default: 0, native size]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the corpus links and shards [default: temporary]")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-stages-"))
    root = corpus(work)
    seconds = defaultdict(float)
    instrument(seconds)
    runs = []
    for _ in range(args.repeats):
        seconds.clear()
        start = time.process_time()
        report = build(BuildConfig(dataset="folder", root=str(root), out=str(work / "shards"), ratio=0.5,
                                   short_side=args.short_side, workers=1, overwrite=True))
        cpu = time.process_time() - start
        seconds["other"] = cpu - sum(seconds[s] for s in STAGES if s != "other")
        runs.append({**{s: seconds[s] / report.frames_written for s in STAGES}, "all": cpu / report.frames_written})
    frames = report.frames_written
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{len(list(root.glob('*/*')))} clips, {frames} frames, --short-side {args.short_side}, "
          f"medians of {args.repeats}")
    print("| stage | CPU ms per frame | share |")
    print("| --- | --- | --- |")
    total = median(r["all"] for r in runs)
    for stage in STAGES + ("all",):
        ms = median(r[stage] for r in runs) * 1000
        print(f"| {'all (the whole build)' if stage == 'all' else stage} | {ms:.3f} | "
              f"{ms / (total * 10):.0f} % |")
    costs, count = conversions(root, args.repeats)
    print(f"\n{count} limited-range yuv420p frames at their own size, medians of {args.repeats} interleaved rounds")
    print("| to JPEG's planes | CPU ms per frame | x the build's |")
    print("| --- | --- | --- |")
    first = next(iter(costs.values()))
    for way, ms in costs.items():
        print(f"| {way} | {ms:.3f} | {ms / first:.2f} |")


if __name__ == "__main__":
    main()
