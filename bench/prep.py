"""Prep speed and storage: `tgprep build` beside a bare decode and the paper's own tools, on the same videos.

Run from the project root: python bench/prep.py [--frames 6000] [--repeats 3] [--work DIR] [--json PATH]
(the paper's tools need the bench extra: pip install -e '.[bench]')

The corpus is bench/corpus.py's (made here, kept in --work for the next run). Every way below keeps the native
size, as the paper does for HMDB / UCF, and uses one process per core:
  (a) the ffmpeg program, one run per video: decode + conversion to RGB, written to the null muxer;
  (c) tgprep.video.decode (PyAV, in-process) to RGB arrays: the decode limit of the build;
  (b) the paper's own tools (bench/paper_tools.py, OpenCV as the reference's mmcv): pass 1 cv2.VideoCapture ->
      cv2.imwrite img_00001.jpg ... (q95 4:2:0), pass 2 cv2.imread of neighbours -> tempgrad_00001.jpg ... of
      uint8((x_t - x_{t+1} + 255) / 2), each pass a whole process over a pool of all cores, as the
      reference's two scripts run;
  build: `tgprep build --dataset folder --workers 0 --short-side 0 --ratio 0.5`, a whole process of its own.
Every whole process pays its interpreter's start-up and imports: (b) twice, the build once.
Wall and CPU seconds (CPU counts every child process) are medians over --repeats, the ways taking turns within
each repeat. The machine may be shared with other work: the CPU-second ratio suffers less from it. Storage:
bytes per frame of the last build's shards and of (b)'s folders, RGB PSNR and TG mean absolute error against
the exact decoded frames (OpenCV's decode gives the same pixels) and their int16 difference, on a sample.
"""

import argparse
import json
import os
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

from corpus import SOURCES, VIDEOS, machine, make_corpus
from tgprep import synth
from tgprep.config import BuildConfig
from tgprep.sample import decode_frames, read_meta, tg_from_stored
from tgprep.video import decode, ffmpeg_exe

TARGET_SPEED, TARGET_BYTES = 2.5, 0.9  # build >= 2.5x (b) in wall time; shard bytes <= 0.9x (b)'s folders


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


def paper_pass(*args) -> int:
    """One of (b)'s passes as the reference runs it, a whole process (bench/paper_tools.py); returns its frames."""
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("paper_tools.py")), *map(str, args)],
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
        "b1": timed(lambda: paper_pass("rgb", *paths, "--out", *folders), frames, "OpenCV frames"),
        "b2": timed(lambda: paper_pass("tg", *folders), frames, "OpenCV TG"),
        "build": timed(lambda: tgprep_build(config), frames, "build"),
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
        paper_rgb, paper_tg = jpegs(folder, "img"), jpegs(folder, "tempgrad") * 2.0 - 255
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
                        folder_bytes(work / "folders", names, "tempgrad") / tg / 1e3)}
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

SPEED_ROWS = [("a", "(a) ffmpeg program: decode + RGB to null"), ("c", "(c) PyAV decode to RGB (tgprep.video.decode)"),
              ("b1", "(b) paper's pass 1: cv2.VideoCapture -> cv2.imwrite img_*.jpg"),
              ("b2", "(b) paper's pass 2: cv2.imread neighbours -> tempgrad_*.jpg"),
              ("b", "(b) the paper's tools, both passes"), ("build", "`tgprep build`, a whole process, all cores")]


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
          "(cv2.imwrite's default, q95 4:2:0: RGB, and TG (d+255)/2)")
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
    lines = [f"build >= {TARGET_SPEED:g}x the paper's tools (b) in wall time: {speed['build']['x_b']:.2f}x "
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
