"""Where a build's time goes: milliseconds per frame for each stage of one in-process build.

Run from the project root: python bench/stages.py [--short-side 0] [--repeats 3] [--work DIR]

The corpus: the real HMDB-51, UCF-101 and Kinetics-400 clips of ../shared/realdata as a folder dataset of links.
The build is tgprep.build.build() itself, its shard tasks run in this process (not in worker processes, whose
timers would be lost with them), with the function of each stage wrapped in a timer:
  decode     VideoStream._decode: demuxing and decoding one frame (PyAV, one thread)
  convert    VideoStream._convert: libswscale's YUV -> RGB conversion and resize in one pass, turned upright
  TG         sample.temporal_gradient and encode_tg's clip and shift: int16 arithmetic, no floats
  RGB JPEG   sample._jpeg of the RGB frame (libjpeg-turbo through simplejpeg, 4:4:4)
  TG JPEG    sample._jpeg of the stored TG frame (the same, 4:2:0)
  tar write  shards.add_sample: copying a sample's members into its tar
  other      the rest of build(): scanning, the plan, manifests, sidecars, Python between the stages
Every figure is divided by the frames decoded (with no --fps, every frame is stored: TG has one frame fewer per
video). CPU time (this process's), so that other work on the machine does not count; medians over --repeats
builds. "all" is the whole build's CPU time, which the timers cannot overstate.
"""

import argparse
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

import tgprep.build
import tgprep.sample
import tgprep.shards
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.video import VideoStream

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
STAGES = ("decode", "convert", "TG", "RGB JPEG", "TG JPEG", "tar write", "other")


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
    VideoStream._convert = timed(VideoStream._convert, lambda *_: "convert")
    tgprep.sample.temporal_gradient = timed(tgprep.sample.temporal_gradient, lambda *_: "TG")
    # encode_tg's time includes its JPEG: the JPEG is taken out again below
    tgprep.sample.encode_tg = timed(tgprep.sample.encode_tg, lambda *_: "TG")
    jpeg_stage = {tgprep.sample.RGB_SUBSAMPLING: "RGB JPEG", tgprep.sample.TG_SUBSAMPLING: "TG JPEG"}
    tgprep.sample._jpeg = timed(tgprep.sample._jpeg, lambda image, quality, subsampling: jpeg_stage[subsampling])
    tgprep.shards.add_sample = timed(tgprep.shards.add_sample, lambda *_: "tar write")
    tgprep.build.executor = lambda config: InProcess()


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
        seconds["TG"] -= seconds["TG JPEG"]
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


if __name__ == "__main__":
    main()
