"""Timing a loader: clips per second and per CPU second, the workers' CPU counted (bench/loader.py, remote.py,
handover.py). Needs no OpenCV, so the tests import it."""

import os
import time
from pathlib import Path

import torch
from torch.utils.data import IterableDataset

from tgtrain.data import loader


def clips_per_second(dataset, workers: int, batches: int, batch: int) -> tuple[float, float]:
    """(clips per second, clips per CPU second) of `batches` batches, once every worker has delivered its first."""
    if isinstance(dataset, IterableDataset):
        data = loader(dataset, workers)
    else:  # a map-style Dataset, batched by the DataLoader as the reference's is
        data = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                           persistent_workers=workers > 0, drop_last=True)
    it = iter(data)
    for _ in range(max(workers, 1)):
        next(it)
    pids = worker_pids(data)
    start, cpu, clips = time.perf_counter(), cpu_seconds(pids), 0
    for _ in range(batches):
        clips += len(next(it)["rgb"])
    seconds, cpu = time.perf_counter() - start, cpu_seconds(pids) - cpu
    del it  # ends the workers before the next way starts
    return clips / seconds, clips / cpu


def worker_pids(data: torch.utils.data.DataLoader) -> list[int]:
    """The worker processes of a started loader with persistent workers (torch keeps its iterator, which holds
    them; tgtrain.data.Loader's own iterator wraps that one)."""
    return [w.pid for w in getattr(getattr(data, "_iterator", None), "_workers", [])]


def cpu_seconds(pids: list[int]) -> float:
    """This process's CPU time and that of the given (running) worker processes, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total
