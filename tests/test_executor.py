"""The supervised local executor with real processes and real signals: workers that crash, hang, are killed
from outside, outlive their parent, or meet a full disk; Ctrl-C. Every video ends in a shard or in failures."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from tests.test_build import config, moving_bar, tar_members
from tgprep.build import _shard_work, build
from tgprep.executor import LocalExecutor
from tgprep.shards import plan_shards
from tgprep.video import encode_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """20 videos of 96 frames at 455x256: a build of a few seconds, long enough to hit a worker mid-shard,
    and videos short enough that no healthy worker is silent for seconds even on a busy machine."""
    root = tmp_path_factory.mktemp("videos")
    for c in range(2):
        (root / f"c{c}").mkdir()
        for i in range(10):
            encode_video(root / f"c{c}" / f"v{i}.avi", moving_bar(96, seed=10 * c + i, size=(455, 256)), fps=25)
    return root


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> dict:
    """The tar members of an uninterrupted build of `videos`."""
    out = tmp_path_factory.mktemp("reference")
    build(config(videos, out, videos_per_shard=1))
    return tar_members(out)


def command(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tgprep.cli", "build", "--dataset", "folder", "--root", str(root), "--out", str(out),
            "--ratio", "0.5", "--val-fraction", "0.25", "--videos-per-shard", "1", "--short-side", "0", *extra]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def ctrl_c_as_in_a_terminal() -> None:
    """The build's Ctrl-C as a terminal's foreground job has it: tests started in the background of a script inherit
    an ignored SIGINT (so does any process they start, which then finishes through a Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait_for_shards(args: list[str], out: Path, shards: int = 1) -> subprocess.Popen:
    """Start a build in its own session; return once `shards` sidecars are written and two workers run."""
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + 60
    while (len(list(out.glob("*-*.json"))) < shards or len(children(process.pid)) < 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the build ended before the test could act"
    return process


def busy_worker(process: subprocess.Popen, out: Path) -> int:
    """A worker of the build that is decoding a video now: its shard's temporary tar is named for its pid."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = {int(p.name.rsplit("-", 1)[1]) for p in out.glob("*.tar.tmp-*")} & set(children(process.pid))
        if pids:
            time.sleep(0.05)  # past opening the tar, into its first video
            return pids.pop()
        time.sleep(0.005)
    raise AssertionError("no worker was seen writing a shard")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_worker_killed_or_hung_once_loses_nothing(videos, reference, tmp_path, how):
    out = tmp_path / "out"
    process = start_and_wait_for_shards(command(videos, out, "--workers", "2", "--timeout", "4"), out)
    os.kill(busy_worker(process, out), getattr(signal, how))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    why = "killed by signal 9" if how == "SIGKILL" else "silent for 4 s"
    assert f"worker {why} on folder_c" in stderr and "writing the shard again" in stderr
    assert "Traceback" not in stderr
    assert tar_members(out) == reference and "all 20 videos written" in stdout


def _dies_on(task, progress, victim: str, how: int, work):
    """A real shard task whose worker process crashes or stops for good whenever it reaches `victim`."""
    def report(event):
        progress(event)
        if event == ("video", victim):
            os.kill(os.getpid(), how)
    return work(task, report)


@pytest.mark.parametrize("how, reason", [(signal.SIGSEGV, "decoder crashed (killed by signal 11)"),
                                         (signal.SIGSTOP, "timed out after 2 s (worker killed)")])
def test_a_video_that_kills_its_worker_twice_is_recorded_and_its_shard_completed(tmp_path, how, reason):
    root = tmp_path / "videos"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(3):
            encode_video(root / f"c{c}" / f"v{i}.avi", moving_bar(12, seed=10 * c + i, size=(341, 256)), fps=25)
    settings = config(root, tmp_path / "out", videos_per_shard=3, timeout=2)
    report = build(config(root, tmp_path / "out", videos_per_shard=3, dry_run=True))
    tasks = plan_shards(report.splits, 3, 0)
    victim = tasks[0].records[1]

    work = partial(_shard_work, out=tmp_path / "out", root=root, config=settings)
    events = []
    sidecars = LocalExecutor(2, timeout=2).run(partial(_dies_on, victim=victim.key, how=how, work=work), tasks,
                                               events.append)
    assert [e[0] for e in events].count("retry") == 2
    failed = [f for s in sidecars for f in s["failures"]]
    assert failed == [{"key": victim.key, "path": victim.path, "set": tasks[0].set, "reason": reason}]

    # the same tars as a build in which that video failed in the ordinary way
    (root / victim.path).write_text("not a video")
    build(config(root, tmp_path / "ordinary", videos_per_shard=3))
    assert tar_members(tmp_path / "out") == tar_members(tmp_path / "ordinary")
    ordinary = json.loads((tmp_path / "ordinary" / f"{tasks[0].name}.json").read_text())
    ours = json.loads((tmp_path / "out" / f"{tasks[0].name}.json").read_text())
    assert ours["keys"] == ordinary["keys"] and ours["sha256"] == ordinary["sha256"]


def test_ctrl_c_stops_the_workers_and_leaves_a_resumable_output(videos, reference, tmp_path):
    out = tmp_path / "out"
    process = start_and_wait_for_shards(command(videos, out, "--workers", "2"), out)
    workers = children(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal sends to the whole foreground group
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "interrupted: run the same command again to resume"
    assert "Traceback" not in stderr and not list(out.glob("*.tmp*"))
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    subprocess.run(command(videos, out, "--workers", "2"), check=True, capture_output=True)
    assert tar_members(out) == reference


def test_workers_die_with_their_parent_and_leave_no_lock(videos, reference, tmp_path):
    out = tmp_path / "out"
    process = start_and_wait_for_shards(command(videos, out, "--workers", "2"), out)
    workers = children(process.pid)
    os.kill(process.pid, signal.SIGKILL)  # the parent alone
    process.wait()
    deadline = time.monotonic() + 10
    while [pid for pid in workers if Path(f"/proc/{pid}").exists()] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    done = subprocess.run(command(videos, out, "--workers", "2"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # not "another tgprep build is writing here"
    assert tar_members(out) == reference


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, where this machine lets the test mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                                                   capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_is_one_line_and_stops_the_build(videos, small_disk):
    out = small_disk / "out"
    done = subprocess.run(command(videos, out, "--workers", "2", "--short-side", "128"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: {re.escape(str(out))}: No space left on device, with [1-9]\d* shards? \([\d.]+ MB\) written; "
                        "free some space there and run the same command again to resume", line), line
    assert "Traceback" not in done.stderr
    assert not list(out.glob("*.tmp*"))  # the half-written shard is gone, the room it took given back
