"""A build streams each video: memory flat in its length, the same bytes as samples made from frames in memory,
and temporary payload files that no failure or kill leaves behind."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

import tgprep.sample
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.datasets.common import Record
from tgprep import planes
from tgprep.sample import make_sample, select_frames
from tgprep.shards import ShardTask, write_shard
from tgprep.video import Video, VideoStream, ffmpeg_exe

RECORD = Record("folder_c_clip", "c/clip.avi", "c", 3, "train")


def pattern_video(path: Path, frames: int, size="320x240", rate="25") -> Path:
    """A moving test pattern from ffmpeg's lavfi source, MPEG-4 part 2 as HMDB's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}",
                    "-frames:v", str(frames), "-c:v", "mpeg4", "-q:v", "5", str(path)], check=True, timeout=60)
    return path


class InMemory:
    """Every frame of a video as JPEG's planes, copied out of the decoder at once: a source make_sample takes."""

    def __init__(self, path: Path):
        with VideoStream(path) as stream:
            self.all = list(stream.pictures())  # each its own buffer
        self.size, self.fps, self.source_size = stream.size, stream.fps, stream.source_size
        self.duration, self.pixels = stream.duration, stream.pixels

    def pictures(self, full_range=True):
        return iter(self.all)


def whole_video_payloads(video: InMemory, fps: float | None) -> tuple[list[int], bytes, bytes]:
    """The frame indices, .rgb and .tg of a sample computed over the whole video at once."""
    frames = video.all
    indices = select_frames([p.time for p in frames], video.duration, fps)
    rgb = b"".join(simplejpeg.encode_jpeg_yuv_planes(*frames[k].planes, 90) for k in indices)
    tg = b"".join(simplejpeg.encode_jpeg_yuv_planes(*planes.difference(frames[k], frames[k + 1]).planes, 90)
                  for k in indices if k + 1 < len(frames))
    return indices.tolist(), rgb, tg


@pytest.mark.parametrize("name", ["hmdb51/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
                                  "other/video_90.mov", "ntsc"])
@pytest.mark.parametrize("fps", [None, 10.0])
def test_streamed_shard_is_byte_identical_to_samples_from_frames_in_memory(real_videos, tmp_path, monkeypatch,
                                                                          name, fps):
    path = pattern_video(tmp_path / "ntsc.avi", 50, "341x256", "30000/1001") if name == "ntsc" else real_videos / name
    monkeypatch.setattr(tgprep.sample, "SPOOL_BYTES", 2000)  # every payload leaves memory for a file
    video = InMemory(path)
    in_memory = make_sample(RECORD, video, fps=fps, quality=90, with_label=True)
    indices, rgb, tg = whole_video_payloads(video, fps)
    assert json.loads(in_memory["json"])["frame_indices"] == indices
    assert in_memory["rgb"] == rgb and in_memory["tg"] == tg

    def streamed(record, with_label):
        with VideoStream(path) as stream:
            return make_sample(record, stream, fps=fps, quality=90, with_label=with_label, spool=tmp_path / "streamed")

    task = ShardTask("labeled-000000", "labeled", [RECORD])
    for out, make in ((tmp_path / "streamed", streamed), (tmp_path / "in_memory", lambda r, w: in_memory)):
        out.mkdir()
        write_shard(out, task, make)
    for suffix in (".tar", ".json"):
        assert (tmp_path / "streamed" / task.name).with_suffix(suffix).read_bytes() == \
               (tmp_path / "in_memory" / task.name).with_suffix(suffix).read_bytes()
    assert sorted(os.listdir(tmp_path / "streamed")) == ["labeled-000000.json", "labeled-000000.tar"]


@pytest.mark.parametrize("native, fps", [(30.0, 10.0), (30000 / 1001, 10.0), (30.0, 7.5), (25.0, 12.0),
                                         (15000 / 1001, 4.0), (24.0, 23.9), (30.0, 30.0)])
def test_streaming_keeps_exactly_the_frames_select_frames_keeps(native, fps):
    """Every length, including those where select_frames keeps or drops the last frame, which a stream only
    learns at its end."""
    for count in range(1, 64):
        levels = np.arange(count, dtype=np.uint8)[:, None, None, None]
        video = Video(np.broadcast_to(levels, (count, 8, 8, 3)), native, (8, 8))
        meta = json.loads(make_sample(RECORD, video, fps=fps, quality=90, with_label=False)["json"])
        expected = select_frames(np.arange(count) / native, count / native, fps).tolist()
        assert meta["frame_indices"] == expected, count
        assert meta["tg_frames"] == len(expected) - (expected[-1] == count - 1)


PEAK = """
import resource, sys
from tgprep.build import build
from tgprep.config import BuildConfig
build(BuildConfig(dataset="folder", root=sys.argv[1], out=sys.argv[2], ratio=1.0, val_fraction=0.0,
                  short_side=0, workers=1))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_does_not_grow_with_video_length(tmp_path):
    """The peak resident memory of a whole build (in a fresh process each) for 40 and 400 frames at 320x240:
    holding the raw frames would cost 360 x 230 KB = 83 MB more (twice that with the stacked copy)."""
    peaks = {}
    for frames in (40, 400):
        root = tmp_path / f"root{frames}"
        pattern_video(root / "c" / "v.avi", frames)
        done = subprocess.run([sys.executable, "-c", PEAK, str(root), str(tmp_path / f"out{frames}")],
                              check=True, capture_output=True, text=True, timeout=120)
        peaks[frames] = int(done.stdout.split()[-1]) / 1024
        assert json.loads((tmp_path / f"out{frames}" / "labeled-000000.json").read_text())["frames"] == frames
    assert peaks[400] - peaks[40] < 30, peaks


def test_a_video_failing_midway_leaves_no_file_and_no_open_file(real_videos, tmp_path, monkeypatch):
    """corrupted.mp4 decodes 28 frames, then fails: its half-made sample is dropped and its spool closed."""
    root = tmp_path / "root"
    (root / "c").mkdir(parents=True)
    (root / "c" / "corrupted.mp4").symlink_to(real_videos / "other/corrupted.mp4")
    pattern_video(root / "c" / "good.avi", 30)
    monkeypatch.setattr(tgprep.sample, "SPOOL_BYTES", 2000)
    out = tmp_path / "out"
    report = build(BuildConfig(dataset="folder", root=str(root), out=str(out), ratio=1.0, val_fraction=0.0,
                               workers=1, videos_per_shard=2))
    assert [f["reason"][:27] for f in report.failures] == ["corrupt video: Invalid data"]
    assert sum(s["samples"] for s in report.sidecars) == 1
    assert not [name for name in os.listdir(out) if ".tmp" in name]
    open_here = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                 if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not [target for target in open_here if target.startswith(str(out))]


KILLED = """
import sys
import tgprep.sample
from tgprep.build import build
from tgprep.config import BuildConfig
tgprep.sample.SPOOL_BYTES = 2000
build(BuildConfig(dataset="folder", root=sys.argv[1], out=sys.argv[2], ratio=1.0, val_fraction=0.0, workers=1))
"""


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def lock_free(out: Path) -> bool:
    """Whether no process holds the build's output lock any more."""
    with open(out / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle, fcntl.LOCK_UN)
        return True


def spools(pid: int, out: Path) -> bool:
    """Whether the process holds a spooled payload: an open file in out that has no name (or no longer has one)."""
    try:
        targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:  # the process ended, or a descriptor closed while we looked
        return False
    return any(t.startswith(f"{out}/") and t.endswith("(deleted)") for t in targets)


def test_a_build_killed_while_spooling_leaves_only_names_the_next_build_removes(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    pattern_video(root / "c" / "long.avi", 1500, "160x120")
    process = subprocess.Popen([sys.executable, "-c", KILLED, str(root), str(out)], start_new_session=True)
    spooling, deadline = False, time.monotonic() + 60
    while not spooling and process.poll() is None and time.monotonic() < deadline:
        spooling = any(spools(pid, out) for pid in [process.pid, *children(process.pid)])
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)  # the build and its worker
    process.wait()
    deadline = time.monotonic() + 10
    while not lock_free(out) and time.monotonic() < deadline:
        time.sleep(0.01)  # a dying worker still holds the build's lock (a descriptor it inherited)
    assert spooling, "the build ended before it spooled a payload"
    left = {p.name for p in out.iterdir()} - {".lock", "manifests", "dataset.json"}
    assert all(".tar.tmp-" in name for name in left), left  # what a build's start-up removes
    build(BuildConfig(dataset="folder", root=str(root), out=str(out), ratio=1.0, val_fraction=0.0, workers=1))
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
