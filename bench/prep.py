"""Prep speed and storage: `tgprep build` beside a bare decode and the paper's two-pass JPEG folders, same videos.

Run from the project root: python bench/prep.py [--frames 6000] [--repeats 3] [--work DIR] [--json PATH]

The corpus (made here, kept in --work for the next run): the real HMDB-51 / UCF-101 / Kinetics-400 clips of
../shared/realdata cut into 2-4 s pieces and re-encoded at native size as HMDB is (MPEG-4 part 2 .avi, by the
ffmpeg program through tgprep.video.encode_video), then synthetic 320x240 videos (tgprep.synth) up to --frames,
laid out as a `folder` dataset (<root>/<class>/<video>). Every way below keeps the native size, as the paper
does for HMDB / UCF, and uses one process per core:
  (a) the ffmpeg program, one run per video: decode + conversion to RGB, written to the null muxer;
  (c) tgprep.video.decode (PyAV, in-process) to RGB arrays: the decode limit of the build;
  (b) the paper's way: pass 1 decodes (tgprep.video.decode) and writes every frame as a JPEG file (Pillow,
      q95 4:2:0, what OpenCV's cv2.imwrite writes by default) into a folder per video; pass 2 reads them
      back and writes TG JPEGs of uint8((x_t - x_{t+1} + 255) / 2), the paper's sign and formula;
  build: tgprep.build.build() called in-process (what `tgprep build --dataset folder --workers 0
      --short-side 0 --ratio 0.5` runs, without the interpreter's start-up).
Wall and CPU seconds (CPU counts every child process) are medians over --repeats, the four ways taking
turns within each repeat. Storage: bytes per frame of the last build's shards and of (b)'s folders, RGB
PSNR and TG mean absolute error against the exact decoded frames and their int16 difference, on a sample.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
from PIL import Image

from tgprep import synth
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.sample import decode_frames, read_meta, tg_from_stored
from tgprep.video import decode, encode_video, ffmpeg_exe

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "realdata" / "videos"
SOURCES = sorted(p for d in ("hmdb51", "ucf101", "kinetics400") for p in (VIDEOS / d).rglob("*")
                 if p.suffix in (".avi", ".mp4"))
PIECE_SECONDS = (2.0, 3.0, 4.0)  # cycled; a rest under 2 s is dropped unless it is the whole clip
SYNTH = dict(width=320, height=240, frames=75, fps=25.0)  # 3 s at the paper's 240p
TARGET_SPEED, TARGET_BYTES = 2.0, 0.8  # build >= 2x (b) frames/s; shard bytes <= 0.8x (b)'s folders


# -- the corpus ---------------------------------------------------------------------------------------------

def make_corpus(work: Path, frames: int) -> dict[str, int]:
    """{path relative to work/corpus: frame count}, made once per --frames and then reused."""
    record = work / "corpus.json"  # written last: a corpus with a record is complete
    if record.is_file() and json.loads(record.read_text())["frames_asked"] == frames:
        return json.loads(record.read_text())["counts"]
    record.unlink(missing_ok=True)
    shutil.rmtree(work / "corpus", ignore_errors=True)
    counts = cut_real(work / "corpus", budget=frames // 2)
    counts |= add_synthetic(work, budget=frames - sum(counts.values()))
    record.write_text(json.dumps({"frames_asked": frames, "counts": counts}, indent=1, sort_keys=True))
    return counts


def cut_real(corpus: Path, budget: int) -> dict[str, int]:
    """The real clips cut into 2-4 s pieces, until `budget` frames (all of them by default)."""
    counts, total = {}, 0
    for source in SOURCES:
        video = decode(source, short_side=0)
        start, piece = 0, 0
        while start < len(video.frames) and total < budget:
            if len(video.frames) - start < round(2 * video.fps) and start > 0:
                break
            frames = video.frames[start:start + round(PIECE_SECONDS[piece % len(PIECE_SECONDS)] * video.fps)]
            name = f"{source.parent.name}/{source.stem}_p{piece}.avi"
            (corpus / name).parent.mkdir(parents=True, exist_ok=True)
            encode_video(corpus / name, frames, video.fps)
            counts[name], total = len(frames), total + len(frames)
            start, piece = start + len(frames), piece + 1
    return counts


def add_synthetic(work: Path, budget: int) -> dict[str, int]:
    """Enough synthetic 240p videos for `budget` frames, hard-linked into the corpus as classes of their own."""
    videos = -(-budget // SYNTH["frames"])
    if videos <= 0:
        return {}
    classes = min(len(synth.MOTIONS), max(1, videos // 2))
    config = synth.SynthConfig(classes=classes, videos_per_class=-(-videos // classes), **SYNTH)
    shutil.rmtree(work / "synth", ignore_errors=True)
    synth.generate(work / "synth", config)
    counts = {}
    for path in sorted((work / "synth").glob("*/*.avi")):
        name = f"{path.parent.name}/{path.name}"
        (work / "corpus" / path.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(path, work / "corpus" / name)
        counts[name] = SYNTH["frames"]
    return counts


# -- the ways, each over the whole corpus ----------------------------------------------------------------------

def ffmpeg_null(path: Path) -> int:
    """(a): one ffmpeg program per video, one thread (a process per core runs beside it), RGB to nothing."""
    done = subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-threads", "1", "-i", str(path), "-an",
                           "-pix_fmt", "rgb24", "-f", "null", "-", "-progress", "pipe:1"],
                          check=True, capture_output=True, text=True)
    return int(done.stdout.rsplit("frame=", 1)[1].split()[0])  # the last progress report counts every frame


def pyav_decode(path: Path) -> int:
    """(c): the build's own decoder, frames to RGB arrays and dropped."""
    return len(decode(path, short_side=0).frames)


def write_frames(path: Path, folder: Path) -> int:
    """(b) pass 1: every frame as img_00001.jpg ... at q95 4:2:0, as the reference code's extraction."""
    folder.mkdir(parents=True)
    frames = decode(path, short_side=0).frames
    for i, frame in enumerate(frames, 1):
        Image.fromarray(frame).save(folder / f"img_{i:05d}.jpg", "JPEG", quality=95, subsampling=2)
    return len(frames)


def write_tg(folder: Path) -> int:
    """(b) pass 2: read the frames back and write tg_00001.jpg ... of uint8((x_t - x_{t+1} + 255) / 2).

    Returns the frames read, so that both passes count the same frames.
    """
    files = sorted(folder.glob("img_*.jpg"))
    previous = np.asarray(Image.open(files[0]).convert("RGB"))
    for i, file in enumerate(files[1:], 1):
        current = np.asarray(Image.open(file).convert("RGB"))
        stored = ((previous.astype(np.int16) - current + 255) // 2).astype(np.uint8)
        Image.fromarray(stored).save(folder / f"tg_{i:05d}.jpg", "JPEG", quality=95, subsampling=2)
        previous = current
    return len(files)


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


def one_round(work: Path, config: BuildConfig, paths: list[Path], frames: int) -> dict[str, tuple]:
    """Each way once over every video: {way: (wall, cpu)}; (b)'s folders and the shards stay in work."""
    folders = [work / "folders" / p.parent.name / p.stem for p in paths]
    shutil.rmtree(work / "folders", ignore_errors=True)
    shutil.rmtree(config.out, ignore_errors=True)
    return {
        "a": timed(lambda: sum(in_pool(ffmpeg_null, paths)), frames, "ffmpeg"),
        "c": timed(lambda: sum(in_pool(pyav_decode, paths)), frames, "PyAV"),
        "b1": timed(lambda: sum(in_pool(write_frames, paths, folders)), frames, "folders"),
        "b2": timed(lambda: sum(in_pool(write_tg, folders)), frames, "TG folders"),
        "build": timed(lambda: build(config).frames_written, frames, "build"),
    }


# -- storage and fidelity -------------------------------------------------------------------------------------

def read_shards(shards: Path, wanted: set[str]) -> tuple[dict[str, tuple[int, int]], dict[str, dict]]:
    """Per video path: (.rgb bytes, .tg bytes); and the whole samples of the wanted paths. Nothing is unpickled."""
    sizes, samples = {}, {}
    for tar in sorted(shards.glob("*.tar")):
        members: dict[str, dict] = {}
        with tarfile.open(tar) as archive:
            for member in archive:
                key, ext = member.name.split(".", 1)  # keys hold no dots
                members.setdefault(key, {"__key__": key})[ext] = archive.extractfile(member).read()
        for sample in members.values():
            path = read_meta(sample)["path"]
            sizes[path] = (len(sample["rgb"]), len(sample["tg"]))
            if path in wanted:
                samples[path] = sample
    return sizes, samples


def jpegs(folder: Path, prefix: str) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob(f"{prefix}_*.jpg"))])


def errors(corpus: Path, folders: Path, samples: dict[str, dict], names: list[str]) -> np.ndarray:
    """Sums over `names`: RGB squared error (ours, paper's), TG absolute error (ours, paper's), RGB values, TG values.

    The exact frames are the decoded ones (tgprep.video.decode, as every way here decodes), the exact TG their
    int16 difference; the paper's TG has the opposite sign, x_t - x_{t+1}.
    """
    sums = np.zeros(6)
    for name in names:
        x = decode(corpus / name, short_side=0).frames
        exact = np.subtract(x[1:], x[:-1], dtype=np.int16)
        ours_rgb = decode_frames(samples[name], "rgb", range(len(x)))
        ours_tg = tg_from_stored(decode_frames(samples[name], "tg", range(len(exact))).astype(np.float64))
        folder = folders / Path(name).with_suffix("")
        paper_rgb, paper_tg = jpegs(folder, "img"), jpegs(folder, "tg") * 2.0 - 255
        x = x.astype(np.float64)
        sums += [((ours_rgb - x) ** 2).sum(), ((paper_rgb - x) ** 2).sum(),
                 np.abs(ours_tg - exact).sum(), np.abs(paper_tg + exact).sum(), x.size, exact.size]
    return sums


def folder_bytes(folders: Path, names: list[str], prefix: str) -> int:
    return sum(f.stat().st_size for n in names for f in (folders / Path(n).with_suffix("")).glob(f"{prefix}_*.jpg"))


def disk_bytes(folder: Path) -> int:
    """What the files under folder take on disk: whole file-system blocks, as many small files pay for."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def storage(work: Path, shards: Path, counts: dict[str, int], sample: int) -> dict:
    """Per material (real pieces, synthetic, all): KB per stored frame, RGB PSNR and TG MAE of both layouts."""
    groups = {"real": sorted(n for n in counts if n.split("/")[0] not in synth.MOTIONS),
              "synthetic": sorted(n for n in counts if n.split("/")[0] in synth.MOTIONS)}
    picked = {g: names[:: max(1, -(-len(names) // sample))] for g, names in groups.items()}  # evenly spread
    sizes, samples = read_shards(shards, {n for names in picked.values() for n in names})
    sums = {g: errors(work / "corpus", work / "folders", samples, names) for g, names in picked.items()}
    groups["all"], picked["all"], sums["all"] = sorted(counts), picked["real"] + picked["synthetic"], sum(sums.values())
    table = {}
    for group, names in groups.items():
        if not names:
            continue
        rgb, tg = sum(counts[n] for n in names), sum(counts[n] - 1 for n in names)
        kb = {"ours": (sum(sizes[n][0] for n in names) / rgb / 1e3, sum(sizes[n][1] for n in names) / tg / 1e3),
              "paper": (folder_bytes(work / "folders", names, "img") / rgb / 1e3,
                        folder_bytes(work / "folders", names, "tg") / tg / 1e3)}
        sq_ours, sq_paper, ab_ours, ab_paper, n_rgb, n_tg = sums[group]
        fidelity = {"ours": (10 * np.log10(255**2 * n_rgb / sq_ours), ab_ours / n_tg),
                    "paper": (10 * np.log10(255**2 * n_rgb / sq_paper), ab_paper / n_tg)}
        table[group] = {"videos": len(names), "frames": rgb, "sampled_videos": len(picked[group]),
                        **{way: {"rgb_kb": kb[way][0], "tg_kb": kb[way][1], "total_kb": sum(kb[way]),
                                 "rgb_psnr": fidelity[way][0], "tg_mae": fidelity[way][1]} for way in kb}}
    frames = sum(counts.values())
    table["disk_kb_per_frame"] = {"ours": disk_bytes(shards) / frames / 1e3,  # tars, sidecars, manifests
                                  "paper": disk_bytes(work / "folders") / frames / 1e3}
    return table


# -- the report -------------------------------------------------------------------------------------------------

def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "memory_gib": round(memory / 2**20, 1), "cpu": cpu,
            "python": platform.python_version()}


SPEED_ROWS = [("a", "(a) ffmpeg program: decode + RGB to null"), ("c", "(c) PyAV decode to RGB (tgprep.video.decode)"),
              ("b1", "(b) pass 1: frames to JPEG files"), ("b2", "(b) pass 2: read back, TG JPEG files"),
              ("b", "(b) the paper's folders, both passes"), ("build", "tgprep build (in-process, all cores)")]


def speed_table(rounds: list[dict], frames: int) -> dict:
    """Medians over the rounds: {way: {wall, cpu, fps, fps_per_cpu, x_b, x_a}}; (b) is pass 1 + pass 2 of each round."""
    for r in rounds:
        r["b"] = (r["b1"][0] + r["b2"][0], r["b1"][1] + r["b2"][1])
    table = {}
    for way, _ in SPEED_ROWS:
        wall, cpu = median(r[way][0] for r in rounds), median(r[way][1] for r in rounds)
        table[way] = {"wall_s": wall, "cpu_s": cpu, "fps": frames / wall, "fps_per_cpu_s": frames / cpu,
                      "walls": [r[way][0] for r in rounds]}
    for row in table.values():
        row["x_b"], row["x_a"] = row["fps"] / table["b"]["fps"], row["fps"] / table["a"]["fps"]
    return table


def print_report(speed: dict, store: dict, frames: int, videos: int, repeats: int, quality: int) -> None:
    print("\nmachine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    print(f"{videos} videos, {frames} frames, native size; medians of {repeats} rounds; x = ratio of frames/s")
    print("| way | frames | wall s | CPU s | frames/s | frames per CPU s | x (b) | x (a) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for way, name in SPEED_ROWS:
        r = speed[way]
        print(f"| {name} | {frames} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['fps']:.0f} | {r['fps_per_cpu_s']:.0f} | "
              f"{r['x_b']:.2f} | {r['x_a']:.2f} |")
    print(f"\nours: the build's shards (RGB JPEG q{quality} 4:4:4, TG clip(d)+128 q{quality} 4:2:0); paper: (b)'s folders "
          "(RGB q95 4:2:0, TG (d+255)/2 q95 4:2:0)")
    print("| material | way | videos (sampled) | RGB KB/frame | TG KB/frame | total KB | x bytes | RGB PSNR dB | TG MAE |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for group, row in store.items():
        if group == "disk_kb_per_frame":
            continue
        for way in ("paper", "ours"):
            r = row[way]
            print(f"| {group} | {way} | {row['videos']} ({row['sampled_videos']}) | {r['rgb_kb']:.1f} | {r['tg_kb']:.1f} | "
                  f"{r['total_kb']:.1f} | {r['total_kb'] / row['paper']['total_kb']:.2f} | {r['rgb_psnr']:.2f} | "
                  f"{r['tg_mae']:.2f} |")
    disk = store["disk_kb_per_frame"]
    print(f"on disk, whole corpus: shards {disk['ours']:.1f} KB per frame, folders {disk['paper']:.1f} "
          f"(file-system blocks), x {disk['ours'] / disk['paper']:.2f}")


def targets(speed: dict, store: dict) -> list[str]:
    per_cpu = speed["build"]["fps_per_cpu_s"] / speed["b"]["fps_per_cpu_s"]
    lines = [f"build >= {TARGET_SPEED:g}x (b) frames/s: {speed['build']['x_b']:.2f}x "
             f"({'met' if speed['build']['x_b'] >= TARGET_SPEED else 'MISSED'}; per CPU second {per_cpu:.2f}x)"]
    for group in ("real", "all"):
        if group not in store:
            continue
        ours, paper = store[group]["ours"], store[group]["paper"]
        ratio = ours["total_kb"] / paper["total_kb"]
        met = ratio <= TARGET_BYTES and ours["rgb_psnr"] >= paper["rgb_psnr"] and ours["tg_mae"] <= paper["tg_mae"]
        lines.append(f"{group}: bytes <= {TARGET_BYTES:g}x the folders' at equal or better RGB PSNR and TG MAE: "
                     f"{ratio:.2f}x, PSNR {ours['rgb_psnr']:.2f} vs {paper['rgb_psnr']:.2f} dB, "
                     f"MAE {ours['tg_mae']:.2f} vs {paper['tg_mae']:.2f} ({'met' if met else 'MISSED'})")
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
        store = storage(work, work / "shards", counts, args.sample)
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
