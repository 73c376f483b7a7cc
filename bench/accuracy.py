"""Accuracy on the synthetic motion set: supervised, fixmatch and ltg at two labeled ratios on the same budget,
beside a single-frame probe that must sit at chance (the set rewards motion, not looks).

Run from the project root: python bench/accuracy.py [--ratios 0.1 0.4] [--epochs 24] [--work DIR] [--json PATH]

The default `tgprep synth` set (10 classes x 40 videos) is built into shards once per ratio; each method trains
with `--preset tiny` for --epochs and is scored by its RGB network's val top-1 (1 centre clip), best and last
epoch. The probe is a small 2D CNN trained on single RGB frames of the fully labeled training pool (every label
it could want) and scored on single val frames: at chance, no frame carries the class.
"""

import argparse
import json
import tempfile
import time
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


def shards(work: Path, root: Path, ratio: float) -> Path:
    out = work / f"shards-{ratio:g}"
    build(BuildConfig(dataset="synthetic", root=str(root), out=str(out), ratio=ratio))
    return out


def method_accuracy(shards_dir: Path, method: str, epochs: int, work: Path) -> dict:
    run = work / f"run-{shards_dir.name}-{method}"
    config = make_config("tiny", data=str(shards_dir), out=str(run), method=method, epochs=epochs)
    started = time.perf_counter()
    train(config)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {"best": max(r["val_top1"] for r in records), "last": records[-1]["val_top1"],
            "tg_last": records[-1].get("val_top1_tg"), "minutes": (time.perf_counter() - started) / 60}


def frame_probe(shards_dir: Path, steps: int = 400, size: int = 56) -> float:
    """Val top-1 (%) of a 2D CNN that sees one RGB frame per video."""
    torch.manual_seed(0)
    classes = len(json.loads((shards_dir / "dataset.json").read_text())["classes"])
    net = nn.Sequential(nn.Conv2d(3, 32, 5, 2, 2), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1),
                        nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 128, 3, 2, 1), nn.BatchNorm2d(128), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    stream = data.train_stream(data.shard_urls(shards_dir, "labeled"), batch_size=32, clip_len=1, interval=1,
                               size=size, area=(0.4, 1.0), modalities=("rgb",), labeled=True, epoch_batches=steps,
                               seed=0)
    net.train()
    for batch in data.loader(stream, 2):  # the weak view: random resized crop and flip, from the loader
        loss = F.cross_entropy(net(augment.normalize(batch["rgb"])[:, :, 0]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    right = seen = 0
    val = data.eval_stream(data.shard_urls(shards_dir, "val"), batch_size=32, clip_len=1, interval=1, size=64,
                           clips=1, crops=1)
    with torch.no_grad():
        for batch in data.loader(val, 2):
            frames = augment.center_crop(batch["rgb"][:, 0], size)
            right += (net(augment.normalize(frames)[:, :, 0]).argmax(1) == batch["label"]).sum().item()
            seen += len(batch["label"])
    return 100 * right / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.4])
    parser.add_argument("--epochs", type=int, default=24, help="the tiny preset's epochs, the same for every method")
    parser.add_argument("--work", type=Path, help="folder for the data and runs [default: temporary]")
    parser.add_argument("--json", type=Path, help="where to write the results [default: <work>.json]")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tgprep-bench-accuracy-"))
    root = work / "synthetic"
    generate(root, SynthConfig())
    results = {"probe": frame_probe(shards(work, root, 1.0))}
    for ratio in args.ratios:
        where = shards(work, root, ratio)
        results[f"{ratio:g}"] = {m: method_accuracy(where, m, args.epochs, work) for m in METHODS}
    print(f"\nsynthetic motion set, 10 classes (chance 10.0 %), --preset tiny, {args.epochs} epochs; val top-1 %")
    print("| labeled | method | best epoch | last epoch | minutes |")
    print("| --- | --- | --- | --- | --- |")
    for ratio in args.ratios:
        for method, r in results[f"{ratio:g}"].items():
            tg = f" (TG network {r['tg_last']:.1f})" if r["tg_last"] is not None else ""
            print(f"| {ratio * 100:.0f} % | {method} | {r['best']:.1f} | {r['last']:.1f}{tg} | {r['minutes']:.1f} |")
    print(f"| 100 % | single-frame 2D probe | - | {results['probe']:.1f} | - |")
    out = args.json or work.with_suffix(".json")
    out.write_text(json.dumps({"epochs": args.epochs, "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
