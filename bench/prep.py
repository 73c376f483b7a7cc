"""Prep speed and storage: `tgprep build` beside a bare decode, its own floor and the paper's own tools, on the same
videos.

Run from the project root: python bench/prep.py [--frames 6000] [--repeats 3] [--work DIR] [--json PATH]
(the paper's tools need the bench extra: pip install -e '.[bench]')

The corpus is bench/corpus.py's (made here, kept in --work for the next run). Every way below keeps the native
size, as the paper does for HMDB / UCF, and uses one process per core:
  (a) the ffmpeg program, one run per video: decode + conversion to RGB, written to the null muxer;
  (c) tgprep.video.decode (PyAV, in-process) to RGB arrays;
  (p) tgprep.video.VideoStream.pictures: decode to JPEG's planes, as the build reads frames;
  (f) the build's floor (bench/floor.py), a whole process over a pool of all cores: (p), TG's planes and the two
      JPEGs per frame, dropped: what the build does but for its tars, metadata and manifests;
  (b) the paper's own tools (bench/paper_tools.py, OpenCV as the reference's mmcv): pass 1 cv2.VideoCapture ->
      cv2.imwrite img_00001.jpg ... (q95 4:2:0), pass 2 cv2.imread of neighbours -> tempgrad_00001.jpg ... of
      uint8((x_t - x_{t+1} + 255) / 2), each pass a whole process over a pool of all cores, as the
      reference's two scripts run;
  build: `tgprep build --dataset folder --workers 0 --short-side 0 --ratio 0.5`, a whole process of its own.
Every whole process pays its interpreter's start-up and imports: (b) twice, (f) and the build once.
Wall and CPU seconds (CPU counts every child process) are medians over --repeats, the ways taking turns within
each repeat. The machine may be shared with other work: the CPU-second ratio suffers less from it.

Storage: bytes per frame over every video of the last build's shards ("ours"), of (b)'s folders ("paper") and of
the frames as the build stored them before it took the decoder's planes ("4:4:4": RGB 4:4:4 JPEGs of the RGB
frames at the build's quality, TG of their RGB difference), and, on a sample of videos, the fidelity of each
against three references (bench/fidelity.py): the decoded RGB frames (tgprep.video.decode; OpenCV's decode gives
the same pixels), the decoder's own planes, and RGB made from those planes as a JPEG decoder makes it. TG's error is against the exact int16
difference of the decoded RGB frames, as it always was, and against that of the planes' RGB.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import fidelity
from corpus import SOURCES, VIDEOS, machine, make_corpus
from tgprep.config import BuildConfig
from tgprep.video import VideoStream, decode, ffmpeg_exe

# build >= 2x (b) (2.5x the moonshot) and >= 0.9x (f), wall and per CPU second; shard bytes <= 0.8x (b)'s folders
TARGET_SPEED, MOONSHOT, TARGET_FLOOR, TARGET_BYTES = 2.0, 2.5, 0.9, 0.8


# -- the ways, each over the whole corpus ----------------------------------------------------------------------

def ffmpeg_null(path: Path) -> int:
    """(a): one ffmpeg program per video, one thread (a process per core runs beside it), RGB to nothing."""
    done = subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-threads", "1", "-i", str(path), "-an",
                           "-pix_fmt", "rgb24", "-f", "null", "-", "-progress", "pipe:1"],
                          check=True, capture_output=True, text=True)
    return int(done.stdout.rsplit("frame=", 1)[1].split()[0])  # the last progress report counts every frame


def pyav_decode(path: Path) -> int:
    """(c): PyAV's decode to RGB arrays, dropped."""
    return len(decode(path, short_side=0).frames)


def pyav_planes(path: Path) -> int:
    """(p): the build's own reading of a video, frames to JPEG's planes, dropped."""
    with VideoStream(path, short_side=0) as stream:
        return sum(1 for _ in stream.pictures())


def in_pool(fn, *items: list) -> list:
    """fn over the items in one process per core, in order (the caller puts the longest videos first)."""
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        return list(pool.map(fn, *items))


def cpu_seconds() -> float:
    """This process's CPU time and that of every child it has waited for (pool workers and their ffmpegs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(fn, frames: int, what: str) -> tuple[float, float]:
    """Wall and CPU seconds of fn(), which returns how many frames it handled (checked against the corpus)."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    got = fn()
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    assert got == frames, f"{what}: {got} frames, the corpus has {frames}"
    return wall, cpu


def script(name: str, *args) -> int:
    """One of bench's scripts as a whole process: (b)'s passes (paper_tools.py) as the reference runs them, and
    (f) (floor.py); returns the frames it handled."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name(name)), *map(str, args)],
                          check=True, capture_output=True, text=True)
    return int(done.stdout)


def tgprep_build(config: BuildConfig) -> int:
    """The build as a user runs it, a whole `tgprep build` process; returns the frames it wrote."""
    command = [str(Path(sys.executable).with_name("tgprep")), "build", "--dataset", "folder", "--root", config.root,
               "--out", config.out, "--ratio", str(config.ratio), "--short-side", str(config.short_side),
               "--quality", str(config.quality), "--workers", str(config.workers),
               "--videos-per-shard", str(config.videos_per_shard)]
    subprocess.run(command, check=True, capture_output=True)
    return sum(json.loads(side.read_text())["frames"] for side in Path(config.out).glob("*-[0-9]*.json"))


def one_round(work: Path, config: BuildConfig, paths: list[Path], frames: int) -> dict[str, tuple]:
    """Each way once over every video: {way: (wall, cpu)}; (b)'s folders and the shards stay in work."""
    folders = [work / "folders" / p.parent.name / p.stem for p in paths]
    shutil.rmtree(work / "folders", ignore_errors=True)
    shutil.rmtree(config.out, ignore_errors=True)
    return {
        "a": timed(lambda: sum(in_pool(ffmpeg_null, paths)), frames, "ffmpeg"),
        "c": timed(lambda: sum(in_pool(pyav_decode, paths)), frames, "PyAV"),
        "p": timed(lambda: sum(in_pool(pyav_planes, paths)), frames, "PyAV planes"),
        "f": timed(lambda: script("floor.py", *paths), frames, "floor"),
        "b1": timed(lambda: script("paper_tools.py", "rgb", *paths, "--out", *folders), frames, "OpenCV frames"),
        "b2": timed(lambda: script("paper_tools.py", "tg", *folders), frames, "OpenCV TG"),
        "build": timed(lambda: tgprep_build(config), frames, "build"),
    }


# -- the report -------------------------------------------------------------------------------------------------

SPEED_ROWS = [("a", "(a) ffmpeg program: decode + RGB to null"), ("c", "(c) PyAV decode to RGB (tgprep.video.decode)"),
              ("p", "(p) PyAV decode to JPEG's planes (VideoStream.pictures)"),
              ("f", "(f) the floor, a whole process: (p) + TG's planes + the two plane JPEGs"),
              ("b1", "(b) paper's pass 1: cv2.VideoCapture -> cv2.imwrite img_*.jpg"),
              ("b2", "(b) paper's pass 2: cv2.imread neighbours -> tempgrad_*.jpg"),
              ("b", "(b) the paper's tools, both passes"), ("build", "`tgprep build`, a whole process, all cores")]


def speed_table(rounds: list[dict], frames: int) -> dict:
    """Medians over the rounds: {way: {wall, cpu, fps, fps_per_cpu, x_b, x_f}}; (b) is pass 1 + pass 2 of each
    round; x_b and x_f are frames/s against (b)'s and (f)'s, x_b_cpu and x_f_cpu frames per CPU second."""
    for r in rounds:
        r["b"] = (r["b1"][0] + r["b2"][0], r["b1"][1] + r["b2"][1])
    table = {}
    for way, _ in SPEED_ROWS:
        wall, cpu = median(r[way][0] for r in rounds), median(r[way][1] for r in rounds)
        table[way] = {"wall_s": wall, "cpu_s": cpu, "fps": frames / wall, "fps_per_cpu_s": frames / cpu,
                      "walls": [r[way][0] for r in rounds], "cpus": [r[way][1] for r in rounds]}
    for row in table.values():
        for ref in ("b", "f"):
            row[f"x_{ref}"] = row["fps"] / table[ref]["fps"]
            row[f"x_{ref}_cpu"] = row["fps_per_cpu_s"] / table[ref]["fps_per_cpu_s"]
    return table


STORE_COLUMNS = ("| material | way | videos (sampled) | RGB KB/frame | TG KB/frame | total KB | x bytes | RGB PSNR dB, "
                 "vs decoded RGB | RGB PSNR dB, vs the planes' RGB | Y / Cb / Cr PSNR dB, vs the planes | TG MAE, vs "
                 "decoded RGB | TG MAE, vs the planes' RGB |")


def print_report(speed: dict, store: dict, frames: int, videos: int, repeats: int, quality: int) -> None:
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    print(f"{videos} videos, {frames} frames, native size; medians of {repeats} interleaved rounds; x = ratio of "
          "frames/s, and of frames per CPU second")
    print("| way | frames | wall s | CPU s | frames/s | frames per CPU s | x (b) | x (b) per CPU s | x (f) | "
          "x (f) per CPU s |")
    print("|" + " --- |" * 10)
    for way, name in SPEED_ROWS:
        r = speed[way]
        print(f"| {name} | {frames} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['fps']:.0f} | {r['fps_per_cpu_s']:.0f} | "
              f"{r['x_b']:.2f} | {r['x_b_cpu']:.2f} | {r['x_f']:.2f} | {r['x_f_cpu']:.2f} |")
    print(f"\nours: the build's shards (JPEGs of the decoder's planes, q{quality} 4:2:0, RGB and TG); 4:4:4: the frames "
          f"as the build stored them before (RGB q{quality} 4:4:4 from RGB, TG of the RGB difference q{quality} 4:2:0); "
          "paper: (b)'s folders (cv2.imwrite's default, q95 4:2:0: RGB, and TG (d+255)/2). KB over every video, "
          "fidelity over the sampled ones; 4:4:4 has no 4:2:0 planes to compare")
    print(STORE_COLUMNS)
    print("|" + " --- |" * 12)
    for group, row in store.items():
        if group == "disk_kb_per_frame":
            continue
        for way in ("paper", "4:4:4", "ours"):
            r = row[way]
            planes_psnr = " / ".join(f"{r[c + '_psnr']:.2f}" for c in ("y", "cb", "cr")) if r["y_psnr"] == r["y_psnr"] else "-"
            print(f"| {group} | {way} | {row['videos']} ({row['sampled_videos']}) | {r['rgb_kb']:.1f} | {r['tg_kb']:.1f} | "
                  f"{r['total_kb']:.1f} | {r['total_kb'] / row['paper']['total_kb']:.2f} | {r['rgb_psnr']:.2f} | "
                  f"{r['rgb_psnr_planes']:.2f} | {planes_psnr} | {r['tg_mae']:.2f} | {r['tg_mae_planes']:.2f} |")
    disk = store["disk_kb_per_frame"]
    print(f"on disk, whole corpus: shards {disk['ours']:.1f} KB per frame, folders {disk['paper']:.1f} "
          f"(file-system blocks), x {disk['ours'] / disk['paper']:.2f}")


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x ({'met' if ratio >= target else 'MISSED'})"


def targets(speed: dict, store: dict) -> list[str]:
    build = speed["build"]
    lines = [f"build >= {TARGET_SPEED:g}x the paper's tools (b) (moonshot {MOONSHOT:g}x): wall {verdict(build['x_b'], TARGET_SPEED)}, "
             f"per CPU second {verdict(build['x_b_cpu'], TARGET_SPEED)}",
             f"build >= {TARGET_FLOOR:g}x its floor (f): wall {verdict(build['x_f'], TARGET_FLOOR)}, "
             f"per CPU second {verdict(build['x_f_cpu'], TARGET_FLOOR)}"]
    for group in ("real", "all"):
        if group not in store:
            continue
        ours, today, paper = store[group]["ours"], store[group]["4:4:4"], store[group]["paper"]
        ratio = ours["total_kb"] / paper["total_kb"]
        tg_met = ours["tg_mae"] <= today["tg_mae"]
        rgb_met = ours["rgb_psnr_planes"] >= today["rgb_psnr"]
        lines.append(f"{group}: bytes <= {TARGET_BYTES:g}x the folders': {ratio:.2f}x "
                     f"({'met' if ratio <= TARGET_BYTES else 'MISSED'}); TG error no worse than 4:4:4's, vs decoded "
                     f"RGB: {ours['tg_mae']:.2f} vs {today['tg_mae']:.2f} ({'met' if tg_met else 'MISSED'}; vs the "
                     f"planes' RGB {ours['tg_mae_planes']:.2f} vs {today['tg_mae_planes']:.2f}); RGB as close to "
                     f"its source as 4:4:4's: {ours['rgb_psnr_planes']:.2f} dB vs the planes' RGB, against "
                     f"{today['rgb_psnr']:.2f} dB vs decoded RGB ({'met' if rgb_met else 'MISSED'})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6000, help="corpus size: real pieces (up to half), then synthetic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, help="folder for the corpus and outputs, kept and reused [default: temporary]")
    parser.add_argument("--json", type=Path, help="where to write the results [default: <work>.json, beside it]")
    parser.add_argument("--sample", type=int, default=12, help="videos per material for PSNR and TG error")
    parser.add_argument("--videos-per-shard", type=int, default=10,
                        help="the build's shards; the default 100 would put a corpus this small in 3 shard tasks")
    parser.add_argument("--quality", type=int, default=BuildConfig.quality, help="the build's JPEG quality")
    args = parser.parse_args()
    if not SOURCES:
        print(f"no real clips under {VIDEOS}: the corpus will be synthetic only", file=sys.stderr)
    work = (args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-prep-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        counts = make_corpus(work, args.frames)
        # longest first, so that the pools end together
        paths = [work / "corpus" / n for n in sorted(counts, key=lambda n: (-counts[n], n))]
        frames = sum(counts.values())
        config = BuildConfig(dataset="folder", root=str(work / "corpus"), out=str(work / "shards"), ratio=0.5,
                             short_side=0, quality=args.quality, workers=0, videos_per_shard=args.videos_per_shard)
        rounds = []
        for i in range(args.repeats):
            rounds.append(one_round(work, config, paths, frames))
            print(f"round {i + 1}: " + ", ".join(f"{k} {w:.1f} s" for k, (w, _) in rounds[-1].items()), flush=True)
        speed = speed_table(rounds, frames)
        store = fidelity.storage(work, work / "shards", counts, args.sample, args.quality)
    finally:
        if args.work is None:
            shutil.rmtree(work)
    print_report(speed, store, frames, len(counts), args.repeats, args.quality)
    goals = targets(speed, store)
    print("\n" + "\n".join(goals))
    out = args.json or work.with_name(work.name + ".json")
    result = {"command": ["python", "bench/prep.py", *sys.argv[1:]], "machine": machine(),
              "corpus": {"videos": len(counts), "frames": frames, "real_frames": store.get("real", {}).get("frames", 0)},
              "build_config": config.settings() | {"workers": config.workers}, "speed": speed, "storage": store,
              "targets": goals}
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
