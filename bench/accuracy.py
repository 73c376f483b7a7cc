"""Accuracy on the synthetic motion set: the supervised ceiling (every label), then supervised, fixmatch and ltg
at each labeled ratio, over seeds; beside a single-frame probe that must sit at chance (no frame tells the class).

Run from the project root: python bench/accuracy.py [--seeds 3] [--synth-seed 0] [--ratios 0.1 0.4] [--json FILE]

Seed i draws its own `tgprep synth` set (the default settings, seed synth_seed + i), its own labeled subsets and
its own training (--seed i). Every method trains with `--preset tiny` and is scored by its RGB network's val top-1
(1 centre clip) at its best and its last epoch; the table gives mean and standard deviation over seeds of the last
epoch, and says how many runs each cell holds. The probe: a small 2D CNN trained on single RGB frames of the fully
labeled pool (every label it could want), scored on single val frames. `--from FILE ...` prints the table of
earlier --json files (runs made apart, merged) without training.
"""

import argparse
import json
import statistics
import tempfile
import time
import tomllib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.synth import SynthConfig, generate
from tgtrain import augment, data
from tgtrain.config import make_config
from tgtrain.engine import train

METHODS = ("supervised", "fixmatch", "ltg")


def shards(work: Path, root: Path, ratio: float, seed: int) -> Path:
    out = work / f"shards-{ratio:g}"
    build(BuildConfig(dataset="synthetic", root=str(root), out=str(out), ratio=ratio, seed=seed))
    return out


def run(shards_dir: Path, method: str, ratio: float, seed: int, work: Path, settings=()) -> dict:
    """One training run's row: method, ratio, seed, best and last val top-1 (RGB; and TG's last for ltg), minutes."""
    out = work / f"run-{ratio:g}-{method}"
    config = make_config("tiny", settings=settings, data=str(shards_dir), out=str(out), method=method, seed=seed)
    started, cpu = time.perf_counter(), time.process_time()
    train(config, overwrite=True)  # a --work folder used before: its runs again
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "val_top1" in r]
    row = dict(method=method, ratio=ratio, seed=seed, best_top1=max(r["val_top1"] for r in scored),
               last_top1=scored[-1]["val_top1"], minutes=round((time.perf_counter() - started) / 60, 2),
               cpu_minutes=round((time.process_time() - cpu) / 60, 2), settings=list(settings))
    if "val_top1_tg" in scored[-1]:
        row["last_top1_tg"] = scored[-1]["val_top1_tg"]
    if method == "fixmatch":
        row["threshold"] = config.fixmatch_threshold
    if "mask_rate" in scored[-1]:  # the last epoch's pseudo-labels: how many kept, how many of those right (%)
        row.update(last_kept=100 * scored[-1]["mask_rate"], last_right=100 * scored[-1]["pseudo_acc"])
    return row


def frame_probe(shards_dir: Path, steps: int = 400) -> float:
    """Val top-1 (%) of a 2D CNN that sees one RGB frame per video, at the tiny preset's sizes and crop."""
    tiny = make_config("tiny")
    size = tiny.size
    torch.manual_seed(0)
    classes = len(json.loads((shards_dir / "dataset.json").read_text())["classes"])
    net = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1),
                        nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 128, 3, 2, 1), nn.BatchNorm2d(128), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    stream = data.train_stream(data.shard_urls(shards_dir, "labeled"), batch_size=32, clip_len=1, interval=1,
                               size=size, area=(tiny.crop_area, 1.0), modalities=("rgb",), labeled=True, epoch_batches=steps,
                               seed=0)
    net.train()
    for batch in data.loader(stream, 2):  # the weak view: random resized crop and flip, from the loader
        loss = F.cross_entropy(net(augment.normalize(batch["rgb"])[:, :, 0]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    right = seen = 0
    val = data.eval_stream(data.shard_urls(shards_dir, "val"), batch_size=32, clip_len=1, interval=1, size=tiny.load_size,
                           clips=1, crops=1)
    with torch.no_grad():
        for batch in data.loader(val, 2):
            frames = augment.center_crop(batch["rgb"][:, 0], size)
            right += (net(augment.normalize(frames)[:, :, 0]).argmax(1) == batch["label"]).sum().item()
            seen += len(batch["label"])
    return 100 * right / seen


def one_seed(work: Path, synth_seed: int, seed: int, ratios, methods, settings, done) -> list[dict]:
    """Every run of one seed on its own synthetic set, in the order of ratios: at 1 (every label) the probe and the
    supervised ceiling, at each other ratio every method. done(row) is called after each run."""
    root = work / "synthetic"
    generate(root, SynthConfig(seed=synth_seed))
    rows = []
    for ratio in ratios:
        where = shards(work, root, ratio, seed)
        if ratio == 1:
            runs = [lambda: dict(method="probe", ratio=1.0, seed=seed, best_top1=None, last_top1=frame_probe(where),
                                 minutes=None, cpu_minutes=None)]
            runs += [lambda: run(where, "supervised", 1.0, seed, work, settings)] if "supervised" in methods else []
        else:
            runs = [lambda m=method: run(where, m, ratio, seed, work, settings) for method in methods]
        for one in runs:
            rows.append(one())
            done(rows[-1])
    return rows


def cell(values: list[float]) -> str:
    """Mean ± std over runs, with their number; one run is shown as itself, never as a mean."""
    if len(values) == 1:
        return f"{values[0]:.1f} (1 run)"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} ({len(values)} runs)"


def label(row: dict) -> str:
    """The row's name in the table: its method, for fixmatch its threshold, and the settings it ran with over the
    tiny preset's, so that runs of different settings are different rows (older rows recorded neither)."""
    if row["method"] == "probe":
        return "single-frame 2D probe"
    name = f"{row['method']} ({row['threshold']:g})" if row.get("threshold") is not None else row["method"]
    settings = [s for s in row.get("settings", ()) if not s.startswith("fixmatch_threshold=")]
    return f"{name} [{', '.join(settings)}]" if settings else name


def table(rows: list[dict]) -> str:
    """The markdown table: per (ratio, method) the last and best epoch's val top-1 over seeds, and minutes."""
    order = {m: i for i, m in enumerate((*METHODS, "probe"))}
    keys = sorted({(r["ratio"], r["method"], label(r)) for r in rows},
                  key=lambda k: (k[1] == "probe", -k[0], order[k[1]], k[2]))
    lines = ["| labeled | method | last epoch | best epoch | minutes per run (CPU minutes) |", "| --- | --- | --- | --- | --- |"]
    for ratio, method, name in keys:
        runs = [r for r in rows if (r["ratio"], label(r)) == (ratio, name)]
        last = cell([r["last_top1"] for r in runs])
        if method == "ltg" and runs[0].get("last_top1_tg") is not None:
            last += f" (TG {statistics.mean(r['last_top1_tg'] for r in runs):.1f})"
        best = cell([r["best_top1"] for r in runs]) if runs[0]["best_top1"] is not None else "-"
        minutes = "-"
        if runs[0]["minutes"] is not None:
            minutes = f"{statistics.mean(r['minutes'] for r in runs):.1f}"
            if runs[0].get("cpu_minutes") is not None:
                minutes += f" ({statistics.mean(r['cpu_minutes'] for r in runs):.1f} CPU)"
        lines.append(f"| {ratio * 100:.0f} % | {name} | {last} | {best} | {minutes} |")
    return "\n".join(lines)


def run_rows(folders: list[Path]) -> list[dict]:
    """Rows, as run() makes them, of finished `tgtrain run` folders (the demo's), read from their files."""
    rows = []
    for folder in folders:
        config = tomllib.loads((folder / "config.toml").read_text())
        built = json.loads((Path(config["data"]) / "dataset.json").read_text())["config"]
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        scored = [r for r in records if "val_top1" in r]
        seconds = [r["seconds"] for r in records if "seconds" in r]  # each epoch's (older runs: none)
        rows.append(dict(method=config["method"], ratio=built["ratio"], seed=config["seed"],
                         best_top1=max(r["val_top1"] for r in scored), last_top1=scored[-1]["val_top1"],
                         minutes=round(sum(seconds) / 60, 2) if seconds else None,
                         last_top1_tg=scored[-1].get("val_top1_tg"),
                         threshold=config["fixmatch_threshold"] if config["method"] == "fixmatch" else None))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds, each its own set and training")
    parser.add_argument("--synth-seed", type=int, default=0, help="the first seed's synthetic set; seed i uses S + i")
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.1, 0.4],
                        help="labeled ratios; at 1 the supervised ceiling and the single-frame probe")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a tgtrain setting over the tiny preset's, for every run (repeatable)")
    parser.add_argument("--work", type=Path, help="folder for the data and runs [default: temporary]")
    parser.add_argument("--json", type=Path, help="where to write the rows [default: <work>.json]")
    parser.add_argument("--from", dest="earlier", type=Path, nargs="+", help="print the table of these --json files")
    parser.add_argument("--runs", type=Path, nargs="+", help="with --from: these run folders, beside the cited "
                        "cells at 100 %% and at their ratio")
    args = parser.parse_args()
    if args.runs and not args.earlier:
        parser.error("--runs cites a table: give it with --from FILE")
    if args.earlier:
        rows = [row for path in args.earlier for row in json.loads(path.read_text())["rows"]]
    else:
        work = args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-accuracy-"))
        out = args.json or work.with_suffix(".json")
        rows = []

        def done(row):  # the file holds every finished run, whenever this is stopped
            rows.append(row)
            out.write_text(json.dumps({"settings": args.settings, "rows": rows}, indent=1) + "\n")

        for seed in range(args.first_seed, args.first_seed + args.seeds):
            one_seed(work / f"seed-{seed}", args.synth_seed + seed, seed, args.ratios, args.methods, args.settings,
                     done)
        print(f"wrote {out}")
    classes = SynthConfig().classes
    heading = f"synthetic motion set, {classes} classes (chance {100 / classes:.1f} %), --preset tiny; val top-1 %"
    if args.runs:
        mine = run_rows(args.runs)
        ratios = {1.0, *(r["ratio"] for r in mine)}
        cited = [r for r in rows if r["ratio"] in ratios and r["method"] != "probe"]
        print(f"\n{heading}\nthis run:\n{table(mine)}\ncited from {', '.join(map(str, args.earlier))} "
              f"(bench/accuracy.py, mean ± std over seeds):\n{table(cited)}")
    else:
        print(f"\n{heading}, mean ± std over seeds\n{table(rows)}")


if __name__ == "__main__":
    main()
