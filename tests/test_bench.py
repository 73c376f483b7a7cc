"""bench/gpu.py, the GPU check, runs end to end on the CPU at small sizes: its numbers mean nothing here, but a
GPU machine then finds a script that works."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu(tmp_path):
    command = [sys.executable, "bench/gpu.py", "--device", "cpu", "--preset", "tiny", "--batch", "2", "--videos", "8",
               "--frames", "20", "--video-sizes", "171x128,160x120", "--workers", "1,2", "--fed-workers", "1",
               "--modes", "eager,channels-last", "--steps", "1", "--warmup", "1", "--batches-per-worker", "2",
               "--json", str(tmp_path / "gpu.json")]  # the compiled modes take a minute each to compile on a CPU
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert list(result["modes"]) == ["eager", "channels-last"]
    for row in result["modes"].values():
        assert row["step"]["clips_s"] > 0 and row["step"]["peak_mib"] > 0 and row["step"]["graph_breaks"] == 0
        assert row["fed"]["1"]["clips_s"] > 0 and 0 <= row["fed"]["1"]["data_wait"] <= 1
        assert row["verdict"].startswith(("fed from", "starved", "slowed"))
    assert set(result["loader_clips_s"]) == {"1", "2"} and all(v > 0 for v in result["loader_clips_s"].values())
    assert "| eager | " in done.stdout and "| channels-last | " in done.stdout


class Spin(torch.utils.data.IterableDataset):
    """Batches that each cost their worker SPIN seconds of CPU."""

    def __iter__(self):
        for _ in range(20):
            end = time.process_time() + SPIN
            while time.process_time() < end:
                pass
            yield {"rgb": torch.zeros(2, 1)}


SPIN = 0.1


def test_the_loader_bench_counts_its_workers_cpu():
    """bench/loader.py's clips per CPU second count the workers' CPU, behind tgtrain's persistent loader too."""
    sys.path.insert(0, str(ROOT / "bench"))
    from measure import clips_per_second
    clips_s, clips_per_cpu_s = clips_per_second(Spin(), workers=1, batches=6, batch=2)
    # 2 clips per SPIN CPU seconds at best; /proc counts in ticks of 10 ms (a worker left uncounted reads 10x more)
    assert clips_per_cpu_s <= 2 / SPIN * 1.2, (clips_s, clips_per_cpu_s)
