"""Hand-over: what it costs a DataLoader to get a batch from its workers to the training process, and with slots.

Run from the project root: python bench/handover.py [--batches 100] [--repeats 3] [--workers 2]

Workers yield ready batches of the training loader's shape (8 clips of 8 RGB + 8 TG frames at 224, uint8: 19 MB),
so that only the hand-over is timed:
  torch:  torch.stack into a new shared-memory file per tensor, as torch's default collate (and tgtrain before
          tgtrain.shared_batches) does;
  slots:  tgtrain.shared_batches.batch, the batch stacked into one of the worker's reused slots.
The training process drops each batch as it comes. CPU ms per batch count the workers and the training process
(/proc), over --batches batches after the first of each worker; medians of --repeats rounds, the ways taking turns.
"""

import argparse
import sys
import time
from pathlib import Path
from statistics import median

import torch
from torch.utils.data import IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/'s scripts, imported as modules
from measure import cpu_seconds, worker_pids  # noqa: E402

from tgtrain import shared_batches  # noqa: E402
from tgtrain.data import loader  # noqa: E402

SHAPE = (8, 224, 224, 3)  # one clip of one modality


class Ready(IterableDataset):
    def __init__(self, way: str, batches: int):
        self.way, self.batches = way, batches

    def __iter__(self):
        clips = [torch.full(SHAPE, k, dtype=torch.uint8) for k in range(8)]
        for _ in range(self.batches):
            if self.way == "slots":
                yield shared_batches.batch({"rgb": clips, "tg": clips}, {})
            else:
                yield {"rgb": in_new_shared_memory(clips), "tg": in_new_shared_memory(clips)}


def in_new_shared_memory(clips: list[torch.Tensor]) -> torch.Tensor:
    storage = clips[0].untyped_storage()._new_shared(len(clips) * clips[0].nbytes)
    return torch.stack(clips, out=clips[0].new(storage).view(len(clips), *clips[0].shape))


def per_batch(way: str, batches: int, workers: int) -> tuple[float, float, float]:
    """(wall ms, CPU ms of all processes, CPU ms of the training process) per batch."""
    data = loader(Ready(way, batches + workers), workers)
    it = iter(data)
    for _ in range(workers):
        next(it)
    pids = worker_pids(data)
    wall, cpu, main = time.perf_counter(), cpu_seconds(pids), time.process_time()
    for _ in range(batches):
        next(it)
    wall, cpu, main = time.perf_counter() - wall, cpu_seconds(pids) - cpu, time.process_time() - main
    del it
    return wall * 1e3 / batches, cpu * 1e3 / batches, main * 1e3 / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    runs = {"torch": [], "slots": []}
    for _ in range(args.repeats):
        for way in runs:
            runs[way].append(per_batch(way, args.batches, args.workers))
    print(f"{args.workers} workers, batches of 2 x {(8, *SHAPE)} uint8, medians of {args.repeats} rounds")
    print("| hand-over | wall ms per batch | CPU ms per batch | of it, the training process |")
    print("| --- | --- | --- | --- |")
    for way, rows in runs.items():
        print(f"| {way} | " + " | ".join(f"{median(r[i] for r in rows):.1f}" for i in range(3)) + " |")


if __name__ == "__main__":
    main()
