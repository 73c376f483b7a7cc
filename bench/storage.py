"""Storage: frame shards against video shards (`tgprep build --store video`), in bytes, loader speed, TG error and
build speed.

Run from the project root: python bench/storage.py [--rounds 3] [--batches 4] [--workers 2] [--work DIR] [--json PATH]

Two corpora of real clips from ../shared/realdata/videos, each built as a folder dataset at short side 256:
  kinetics: the three Kinetics-400 clips (h264 340x256, 10 s), two copies each;
  hmdb-ucf: the four HMDB-51 and two UCF-101 clips (240p, 48 to 251 frames), the 240p material HMDB and UCF are.
Ways to store each: frames (the default), frames --fps 7.5, and video with x264's presets medium, faster, veryfast
and superfast (CRF 17, tune fastdecode, 5 B-frames none of them a reference, a keyframe every 32 frames), veryfast
and superfast at CRF 18, and superfast CRF 18 with a keyframe every 16 and every 64 (the preset and CRF set as
tgprep.video_sample's PRESET and CRF in this process before the build; the build's workers are forked from it).
  bytes:  the shards' bytes per video and their ratio to the original files';
  loader: tgtrain.data.train_stream in this process (no workers, one torch thread), 8 RGB + 8 TG frames 8 apart,
          batch 8, size 224, over every shard: clips/s and clips per CPU-second, medians of --rounds rounds, the
          ways taking turns (the machine may be shared: compare the per-CPU-second ratios);
  TG:     mean absolute error of the TG a loader sees (tg_from_stored of the stored or computed image) against the
          exact int16 difference of the frames decoded from the original files, over every TG frame;
  RGB:    mean absolute error of the RGB frames against those decoded frames;
  build:  decoded frames/s of tgprep.build.build with --workers, wall clock, and CPU milliseconds per decoded frame
          (this process and its workers, the encoder programs included).
--ways picks some of the ways by their names' start (frames is always built: the others compare to it).
"""

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch

import tgprep.video_sample
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.sample import decode_frames, tg_from_stored
from tgprep.video import decode
from tgprep.video_decode import clip_frames
from tgprep.video_sample import is_video, read_meta
from tgtrain.data import tar_samples, train_stream

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
CORPORA = {
    "kinetics": [f"kinetics400/using_segway/{c}.mp4"
                 for c in ("R6llTwEh07w_000000_000010", "SOX5yA1l24A_000299_000309", "WUzgd7C1pWA_000101_000111")] * 2,
    "hmdb-ucf": ["hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi", "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
                 "hmdb51/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
                 "hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi",
                 "ucf101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi",
                 "ucf101/SoccerJuggling/v_SoccerJuggling_g24_c01.avi"],
}

def video(preset: str, crf: int = 17, keyframe_interval: int = 32) -> dict:
    return dict(store="video", keyframe_interval=keyframe_interval, x264=(preset, crf))


WAYS = {"frames": dict(store="frames"), "frames --fps 7.5": dict(store="frames", fps=7.5),
        "video, medium, CRF 17, keyframe 32": video("medium"),
        "video, faster, CRF 17, keyframe 32": video("faster"),
        "video, veryfast, CRF 17, keyframe 32": video("veryfast"),
        "video, superfast, CRF 17, keyframe 32": video("superfast"),
        "video, veryfast, CRF 18, keyframe 32": video("veryfast", crf=18),
        "video, superfast, CRF 18, keyframe 32": video("superfast", crf=18),
        "video, superfast, CRF 18, keyframe 16": video("superfast", crf=18, keyframe_interval=16),
        "video, superfast, CRF 18, keyframe 64": video("superfast", crf=18, keyframe_interval=64)}
# video: <= 2x the original files, >= 0.5x the frame shards' clips per CPU-s, <= 3 CPU ms per frame to build
TARGET_BYTES, TARGET_CPU, TARGET_BUILD_MS = 2.0, 0.5, 3.0


def corpus_root(name: str, work: Path) -> tuple[Path, dict[str, Path]]:
    """A folder dataset of the corpus (links, two classes so that both sets have videos); relative path -> file."""
    root, files = work / name, {}
    for i, clip in enumerate(CORPORA[name]):
        relative = f"{'ab'[i % 2]}/{i}_{Path(clip).name}"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).symlink_to(REAL / clip)
        files[relative] = REAL / clip
    return root, files


def cpu_seconds() -> float:
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def build_way(root: Path, out: Path, workers: int, settings: dict) -> dict:
    settings = dict(settings)
    defaults = tgprep.video_sample.PRESET, tgprep.video_sample.CRF
    tgprep.video_sample.PRESET, tgprep.video_sample.CRF = settings.pop("x264", defaults)
    config = BuildConfig(dataset="folder", root=str(root), out=str(out), ratio=0.5, val_fraction=0.34,
                         videos_per_shard=2, short_side=256, workers=workers, **settings)
    try:
        wall, cpu = time.perf_counter(), cpu_seconds()
        report = build(config)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    finally:
        tgprep.video_sample.PRESET, tgprep.video_sample.CRF = defaults
    return {"frames": report.frames_written, "wall": wall, "cpu": cpu,
            "bytes": sum(p.stat().st_size for p in out.glob("*.tar"))}


def errors(out: Path, files: dict[str, Path]) -> dict:
    """Mean absolute TG and RGB errors of every sample against the frames decoded from its original file."""
    tg_sum = tg_n = rgb_sum = rgb_n = 0
    for sample in tar_samples({"url": str(t)} for t in sorted(out.glob("*.tar"))):
        meta = read_meta(sample)
        original = decode(files[meta["path"]], short_side=256).frames.astype(np.int16)
        kept = np.array(meta["frame_indices"])
        exact = original[kept[:meta["tg_frames"]] + 1] - original[kept[:meta["tg_frames"]]]
        if is_video(sample):
            got = clip_frames(sample, meta, np.arange(meta["frames"]), ("rgb",))["rgb"]
            tg = clip_frames(sample, meta, np.arange(meta["tg_frames"]), ("tg",))["tg"]
        else:
            got = decode_frames(sample, "rgb", range(meta["frames"]))
            tg = decode_frames(sample, "tg", range(meta["tg_frames"]))
        tg_sum += np.abs(tg_from_stored(tg.astype(np.float64)) - exact).sum()
        tg_n += exact.size
        rgb_sum += np.abs(got.astype(np.int16) - original[kept]).sum()
        rgb_n += got.size
    return {"tg_error": tg_sum / tg_n, "rgb_error": rgb_sum / rgb_n}


def load_round(out: Path, batches: int, seed: int) -> tuple[float, float]:
    """(clips/s, clips per CPU-second) of `batches` batches of 8 training clips over every shard, in this process."""
    urls = [str(t) for t in sorted(out.glob("*.tar")) if t.stat().st_size > 10240]
    stream = train_stream(urls, batch_size=8, clip_len=8, interval=8, size=224, labeled=False,
                          epoch_batches=batches + 1, seed=seed)
    it = iter(stream)
    next(it)  # the shuffle buffer fills and the first shards open outside the timing
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return 8 * batches / wall, 8 * batches / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="folder to hold the builds (made if missing) "
                        "[default: the system's temporary folder]")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--ways", nargs="*", default=None, help="starts of the ways' names, e.g. 'video, veryfast'")
    args = parser.parse_args()
    ways = {w: s for w, s in WAYS.items() if w == "frames" or args.ways is None or w.startswith(tuple(args.ways))}
    torch.set_num_threads(1)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=args.work))
    results = {}
    try:
        for corpus in CORPORA:
            root, files = corpus_root(corpus, work)
            original = sum(p.stat().st_size for p in files.values())
            results[(corpus, "original files")] = {"bytes_per_video": original / len(files), "x_original": 1.0}
            outs = {}
            for way, settings in ways.items():
                outs[way] = work / f"{corpus}-{len(outs)}"
                row = build_way(root, outs[way], args.workers, settings)
                decoded = results.get((corpus, "frames"), row)["frames"]  # every way decodes every frame
                row.update(errors(outs[way], files), bytes_per_video=row["bytes"] / len(files),
                           x_original=row["bytes"] / original, frames_s=decoded / row["wall"],
                           cpu_ms_per_frame=1000 * row["cpu"] / decoded)
                results[(corpus, way)] = row
            speeds = {way: [] for way in ways}
            for r in range(args.rounds):  # interleaved
                for way in ways:
                    speeds[way].append(load_round(outs[way], args.batches, seed=r))
            for way in ways:
                row = results[(corpus, way)]
                row["clips_s"] = median(s[0] for s in speeds[way])
                row["clips_cpu_s"] = median(s[1] for s in speeds[way])
                row["cpu_vs_frames"] = row["clips_cpu_s"] / results[(corpus, "frames")]["clips_cpu_s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps({f"{c} / {w}": row for (c, w), row in results.items()}, indent=1))


def table(results: dict) -> str:
    lines = ["| corpus | storage | KB per video | x original | loader clips/s | clips per CPU-s (x frames) | "
             "TG error | RGB error | build frames/s (decoded) | build CPU ms/frame |", "|" + " --- |" * 10]
    for (corpus, way), r in results.items():
        if way == "original files":
            lines.append(f"| {corpus} | the original files | {r['bytes_per_video'] / 1e3:.0f} | 1.00 |" + " - |" * 6)
            continue
        lines.append(f"| {corpus} | {way} | {r['bytes_per_video'] / 1e3:.0f} | {r['x_original']:.2f} | "
                     f"{r['clips_s']:.1f} | {r['clips_cpu_s']:.1f} ({r['cpu_vs_frames']:.2f}x) | {r['tg_error']:.2f} | "
                     f"{r['rgb_error']:.2f} | {r['frames_s']:.0f} | {r['cpu_ms_per_frame']:.2f} |")
    lines.append(f"\nvideo ways meeting all three targets on both corpora (<= {TARGET_BUILD_MS:g} CPU ms per frame, "
                 f"<= {TARGET_BYTES:g}x the original bytes, >= {TARGET_CPU:g}x the frame shards' clips per CPU-second):")
    for way in dict.fromkeys(w for _, w in results if w.startswith("video")):
        rows = [r for (_, w), r in results.items() if w == way]
        worst = {"build ms": max(r["cpu_ms_per_frame"] for r in rows), "x bytes": max(r["x_original"] for r in rows),
                 "x loader": min(r["cpu_vs_frames"] for r in rows)}
        misses = [f"{name} {value:.2f}" for name, value in worst.items()
                  if not (value >= TARGET_CPU if name == "x loader" else value <= {"build ms": TARGET_BUILD_MS,
                                                                                  "x bytes": TARGET_BYTES}[name])]
        lines.append(f"- {way}: {'met' if not misses else 'missed (' + ', '.join(misses) + ')'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
