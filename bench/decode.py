"""Decoding speed: tgprep.video.decode (PyAV, in-process) against the ffmpeg program piping frames (reference).

Run from the project root: python bench/decode.py [--repeats 5]
HMDB-length clips (2-4 s): the real HMDB-51 clips as they are, real UCF-101 / Kinetics / other clips cut or
looped to 2-4 s and re-encoded as HMDB is (MPEG-4 part 2 .avi) or as Kinetics is (H.264 .mp4), and clips
that ffmpeg synthesises. Both decoders resize to short side 256 and return the same (T, H, W, 3) uint8 array.
CPU time counts the ffmpeg child process too. Medians over repeats; ratios are reference / decode().
"""

import argparse
import resource
import subprocess
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np

from tgprep.video import decode, decode_ffmpeg, encode_video, ffmpeg_exe

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
HMDB = sorted((VIDEOS / "hmdb51").rglob("*.avi"))
# (source clip, seconds, extension): cut when longer, looped when shorter
REMADE = [
    ("ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi", 3.0, ".avi"),
    ("kinetics400/using_segway/R6llTwEh07w_000000_000010.mp4", 2.5, ".avi"),
    ("kinetics400/using_segway/SOX5yA1l24A_000299_000309.mp4", 3.5, ".mp4"),
    ("other/bikes.mp4", 4.0, ".mp4"),
    ("other/carphone_pristine.mp4", 2.0, ".avi"),
]
SYNTHETIC = [("testsrc2=size=320x240:rate=30:duration=3", ".avi"), ("testsrc2=size=640x360:rate=25:duration=2", ".mp4")]


def make_clips(folder: Path) -> list[Path]:
    clips = list(HMDB)
    for name, seconds, ext in REMADE:
        video = decode(VIDEOS / name, short_side=0)
        count = round(seconds * video.fps)
        frames = video.frames[np.arange(count) % len(video.frames)]
        clips.append(folder / f"{Path(name).stem}-{seconds:g}s{ext}")
        encode_video(clips[-1], frames, video.fps)
    for i, (source, ext) in enumerate(SYNTHETIC):
        clips.append(folder / f"synthetic-{i}{ext}")
        codec = "mpeg4" if ext == ".avi" else "libx264"
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", source, "-c:v", codec, "-pix_fmt", "yuv420p",
                        str(clips[-1])], check=True)
    return clips


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(fn, path: Path, repeats: int) -> tuple[float, float, int]:
    """Median wall and CPU seconds of fn(path), and the frame count."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), cpu_seconds()
        frames = fn(path)
        walls.append(time.perf_counter() - wall)
        cpus.append(cpu_seconds() - cpu)
    return median(walls), median(cpus), len(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        clips = make_clips(Path(folder))
        print("| clip | frames | ffmpeg wall ms | decode() wall ms | wall ratio | ffmpeg CPU ms | decode() CPU ms | CPU ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        totals = np.zeros(5)
        for path in clips:
            ref_wall, ref_cpu, count = measure(decode_ffmpeg, path, args.repeats)
            wall, cpu, same = measure(lambda p: decode(p).frames, path, args.repeats)
            assert same == count, f"{path.name}: {same} frames, the ffmpeg program decodes {count}"
            totals += (count, ref_wall, wall, ref_cpu, cpu)
            print(f"| {path.name[:40]} | {count} | {ref_wall * 1e3:.0f} | {wall * 1e3:.0f} | {ref_wall / wall:.2f} | "
                  f"{ref_cpu * 1e3:.0f} | {cpu * 1e3:.0f} | {ref_cpu / cpu:.2f} |")
        n, ref_wall, wall, ref_cpu, cpu = totals
        print(f"| all {len(clips)} clips | {n:.0f} | {ref_wall * 1e3:.0f} | {wall * 1e3:.0f} | {ref_wall / wall:.2f} | "
              f"{ref_cpu * 1e3:.0f} | {cpu * 1e3:.0f} | {ref_cpu / cpu:.2f} |")
        print(f"\nframes/s per core (CPU): ffmpeg program {n / ref_cpu:.0f}, decode() {n / cpu:.0f}")


if __name__ == "__main__":
    main()
