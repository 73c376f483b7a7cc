"""Loader start-up: what an epoch's data costs when its loaders are made anew each epoch, as tgtrain once did, and
when they are kept for the run (tgtrain.loaders.RunLoaders, persistent workers).

Run from the project root: python bench/loader_startup.py [--workers 2] [--epochs 4] [--rounds 3]

An LTG epoch reads five loaders: the labeled and the unlabeled stream, PreciseBN's, and the val views of each
network. Each way runs --epochs such epochs of the tiny preset's data (the synthetic motion set, a few steps per
epoch, so that start-up is what shows) in a fresh subprocess, with no model: "fresh" makes RunLoaders at every epoch,
"kept" once. Wall and CPU seconds (the subprocess and its workers) per epoch, medians of --rounds interleaved rounds;
their difference is the start-up that keeping the loaders saves per epoch.
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/corpus.py, imported as a module
import corpus  # noqa: E402

from tgprep.build import build  # noqa: E402
from tgprep.config import BuildConfig  # noqa: E402
from tgprep.synth import SynthConfig, generate  # noqa: E402
from tgtrain.config import make_config  # noqa: E402
from tgtrain.engine import pool_shards  # noqa: E402
from tgtrain.loaders import RunLoaders  # noqa: E402
from tgtrain.methods import LTG  # noqa: E402
from tgtrain.shards import Data  # noqa: E402


def epochs(root: Path, way: str, workers: int, count: int, steps: int) -> None:
    """`count` epochs of the five loaders' passes, the loaders made per epoch (fresh) or once (kept)."""
    source = Data(root)
    config = make_config("tiny", workers=workers, precise_bn_batches=steps)
    urls = source.shards("labeled"), pool_shards(source), source.shards("val")
    loaders = None
    for epoch in range(count):
        if way == "fresh" or loaders is None:
            loaders = RunLoaders(config, LTG, *urls, steps, epoch, len(source.dataset["classes"]))
        for batches in (loaders.epoch(), loaders.precise_bn(), loaders.val("rgb"), loaders.val("tg")):
            for _ in batches:
                pass


def measure(root: Path, way: str, workers: int, count: int, steps: int) -> tuple[float, float]:
    """(wall s, CPU s of the subprocess and its workers) per epoch."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--run", str(root), way, str(workers), str(count), str(steps)],
                   check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return (time.perf_counter() - start) / count, cpu / count


def main() -> None:
    if sys.argv[1:2] == ["--run"]:
        root, way, workers, count, steps = sys.argv[2:]
        return epochs(Path(root), way, int(workers), int(count), int(steps))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="loader processes per loader")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4, help="batches per training stream and PreciseBN per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        generate(work / "synthetic", SynthConfig(videos_per_class=10))
        build(BuildConfig(dataset="synthetic", root=str(work / "synthetic"), out=str(work / "shards"), ratio=0.5))
        runs = {"fresh": [], "kept": []}
        for _ in range(args.rounds):
            for way in runs:
                runs[way].append(measure(work / "shards", way, args.workers, args.epochs, args.steps))
    print(f"machine: {corpus.machine()}")
    print(f"{args.epochs} LTG epochs of the tiny preset's data ({args.steps} steps, {args.steps} PreciseBN batches, "
          f"the val views of both networks), {args.workers} workers per loader; medians of {args.rounds} rounds")
    print("| loaders | wall s per epoch | CPU s per epoch |\n| --- | --- | --- |")
    for way, rows in runs.items():
        print(f"| {way} | {median(r[0] for r in rows):.2f} | {median(r[1] for r in rows):.2f} |")
    saved = [median(r[i] for r in runs["fresh"]) - median(r[i] for r in runs["kept"]) for i in (0, 1)]
    print(f"kept for the run, each epoch saves {saved[0]:.2f} s of wall time and {saved[1]:.2f} CPU s")


if __name__ == "__main__":
    main()
