"""Frames straight from the decoder's planes: each kind of source takes its step to JPEG's full-range BT.601 and
comes out right; odd sides keep their edge; --fps keeps frames by presentation time, on variable-rate sources
made by ffmpeg and, as before, on constant-rate ones; and such a mix builds byte-identical shards on any workers."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from tests.test_build import tar_members
from tgprep import planes
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.datasets.common import Record
from tgprep.sample import decode_frames, make_sample, read_meta, select_frames
from tgprep.verification import verify
from tgprep.video import VideoStream, decode, ffmpeg_exe
from tgprep.video_decode import clip_frames
from tgprep.video_sample import make_video_sample
from tgprep.video_sample import read_meta as read_either

RECORD = Record("folder_c_clip", "c/clip.avi", "c", 0, "train")
# (file, lavfi size, output options, --short-side, the stored size, the step it takes)
KINDS = {
    "limited BT.601": ("lim.avi", "320x240", ["-c:v", "mpeg4", "-q:v", "2"], 0, (320, 240), "range table"),
    "BT.709": ("bt709.mp4", "320x240", ["-vf", "scale=out_color_matrix=bt709", "-colorspace", "bt709",
                                        "-c:v", "libx264", "-crf", "12"], 0, (320, 240), "libswscale"),
    "full range yuvj420p": ("full.avi", "320x240", ["-vf", "scale=out_range=full", "-c:v", "mjpeg", "-q:v", "2",
                                                    "-pix_fmt", "yuvj420p"], 0, (320, 240), "none"),
    "odd sides, native": ("odd.mkv", "428x242", ["-vf", "scale=427:241", "-c:v", "ffv1", "-pix_fmt", "yuv420p"],
                          0, (427, 241), "range table"),
    "427x240 from 16:9": ("wide.avi", "640x360", ["-c:v", "mpeg4", "-q:v", "2"], 240, (427, 240), "libswscale"),
    "341x256 from 4:3": ("four3.avi", "640x480", ["-c:v", "mpeg4", "-q:v", "2"], 256, (341, 256), "libswscale"),
    "455x256 from 16:9": ("wide.avi", "640x360", ["-c:v", "mpeg4", "-q:v", "2"], 256, (455, 256), "libswscale"),
}


def ffmpeg(*args) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True,
                   capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    """Every kind of source above, 6 frames of ffmpeg's colourful test pattern, and a variable-rate one: 30 frames
    at 1/30 s, then 22 at 4/30 s (H.264 with B-frames in an MP4)."""
    root = tmp_path_factory.mktemp("sources")
    for name, size, options, *_ in KINDS.values():
        if not (root / name).exists():
            ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25", "-frames:v", 6, *options, root / name)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-frames:v", 52,
           "-vf", "setpts='if(lt(N,30),N,30+4*(N-30))/30/TB'", "-fps_mode", "passthrough", "-c:v", "libx264",
           root / "vfr.mp4")
    return root


def stored_luma(sample: dict) -> np.ndarray:
    """The stored frames' Y planes, as the JPEG holds them (decoded as grey: no colour conversion)."""
    offsets = json.loads(sample["json"])["rgb_offsets"]
    return np.stack([simplejpeg.decode_jpeg(sample["rgb"][a:b], "GRAY")[..., 0] for a, b in zip(offsets, offsets[1:])])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_of_source_takes_its_step_to_jpegs_own_planes(sources, kind):
    name, _, _, short_side, size, step = KINDS[kind]
    with VideoStream(sources / name, short_side) as stream:
        sample = make_sample(RECORD, stream, fps=None, quality=95, with_label=False)
    meta = read_meta(sample)
    assert (meta["width"], meta["height"]) == size and meta["source_pixels"]["step"] == step
    assert meta["rgb_encoding"]["subsampling"] == "4:2:0" and meta["rgb_encoding"]["from"] == "ycbcr-planes"
    reference = decode(sources / name, short_side).frames.astype(float)  # libswscale's RGB, its own matrix and range
    # JPEG's Y is BT.601 full range of that RGB: a range or matrix left out is off by 7 to 13 grey levels
    assert np.abs(stored_luma(sample) - reference @ [0.299, 0.587, 0.114]).mean() < 2
    rgb = decode_frames(sample, "rgb", range(meta["frames"])).astype(float)
    errors = np.abs(rgb - reference).mean((0, 1, 3))  # per column: chroma filters differ at the test pattern's edges
    assert errors.mean() < 5 and errors[-1] < 2 * np.median(errors) + 1, errors[-4:]  # the last column as any


def test_a_rotated_real_file_is_turned_upright_on_the_planes(real_videos):
    path = real_videos / "other/video_90.mov"  # BT.709, stored with a -90 degree rotation tag
    with VideoStream(path) as stream:
        sample = make_sample(RECORD, stream, fps=None, quality=95, with_label=False)
    meta = read_meta(sample)
    assert (meta["width"], meta["height"]) == (256, 454) and meta["source_pixels"]["matrix"] == "bt709"
    reference = decode(path).frames.astype(float)
    assert np.abs(stored_luma(sample) - reference @ [0.299, 0.587, 0.114]).mean() < 2


def vfr_times() -> list[float]:
    return [round(k / 30, 6) for k in range(30)] + [round((30 + 4 * j) / 30, 6) for j in range(22)]


@pytest.mark.parametrize("store", ["frames", "video"])
def test_a_variable_rate_source_keeps_frames_by_their_times(sources, store):
    make = (lambda s, fps: make_sample(RECORD, s, fps=fps, quality=90, with_label=False)) if store == "frames" \
        else (lambda s, fps: make_video_sample(RECORD, s, fps=fps, with_label=False))
    with VideoStream(sources / "vfr.mp4") as stream:
        everything = read_either(make(stream, None))
    assert everything["frame_indices"] == list(range(52)) and everything["frame_times"] == vfr_times()
    with VideoStream(sources / "vfr.mp4") as stream:
        sample = make(stream, 10.0)
    meta = read_either(sample)
    # a tick every 0.1 s: every third frame of the fast second, every frame of the slow part (each stored once)
    assert meta["frame_indices"] == [*range(0, 30, 3), *range(30, 52)] and meta["fps"] == 10.0
    assert meta["frame_times"] == [vfr_times()[k] for k in meta["frame_indices"]]
    assert meta["tg_frames"] == meta["frames"] - 1  # the last kept frame is the last one: no next frame
    if store == "video":
        assert clip_frames(sample, meta, [0, 9, 10, 30])["tg"].shape == (4, 120, 160, 3)


def old_selection(count: int, native_fps: float, fps: float) -> list[int]:
    """The frames --fps kept before it went by time: every (native / fps)-th index."""
    kept = np.ceil(count * fps / native_fps - 1e-9)
    return np.unique(np.floor(np.arange(kept) * (native_fps / fps) + 1e-9).astype(int).clip(0, count - 1)).tolist()


def test_constant_rate_sources_keep_the_frames_they_kept_before(real_videos, sources):
    """Real HMDB-51 (packed B-frames in AVI: pts out of order), UCF-101 and Kinetics clips, and ffmpeg's own."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30000/1001", "-frames:v", 61, "-c:v", "mpeg4", "-bf", 2,
           sources / "ntsc_bframes.avi")
    paths = [*sorted((real_videos / "hmdb51").rglob("*.avi")), *sorted((real_videos / "ucf101").rglob("*.avi")),
             *sorted((real_videos / "kinetics400").rglob("*.mp4")), sources / "ntsc_bframes.avi", sources / "lim.avi"]
    for path in paths:
        video = decode(path, short_side=32)
        assert np.all(np.diff(video.times) > 0), path.name
        for fps in (10.0, 7.5, 12.0):
            kept = select_frames(video.times, video.duration, fps).tolist()
            assert kept == old_selection(len(video.frames), video.fps, fps), (path.name, fps)


def test_a_mix_of_every_kind_builds_the_same_bytes_on_one_and_two_workers_and_verifies(sources, tmp_path):
    root = tmp_path / "root"
    for name in {kind[0] for kind in KINDS.values()} | {"vfr.mp4"}:
        (root / Path(name).stem).mkdir(parents=True)
        (root / Path(name).stem / name).symlink_to(sources / name)
    outs = []
    for workers in (1, 2):
        outs.append(tmp_path / f"out{workers}")
        build(BuildConfig(dataset="folder", root=str(root), out=str(outs[-1]), ratio=1.0, val_fraction=0.0,
                          short_side=240, fps=10.0, workers=workers, videos_per_shard=2))
    assert tar_members(outs[0]) == tar_members(outs[1]) and len(tar_members(outs[0])) == 4 * len(list(root.iterdir()))
    assert verify(outs[0]) == []


def test_a_picture_keeps_its_odd_edge_in_the_buffer_that_turbojpeg_reads():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    picture = planes.from_rgb(rgb)
    assert picture.y.shape == (5, 7) and picture.cb.shape == picture.cr.shape == (3, 4)
    padded = picture.data[:8 * 6].reshape(6, 8)  # the yuv420p frame of even sides that TurboJPEG reads
    assert np.array_equal(padded[:5, 7], padded[:5, 6]) and np.array_equal(padded[5], padded[4])
    tg = planes.difference(picture, planes.from_rgb(rgb[::-1].copy()))
    assert np.array_equal(tg.data[:48].reshape(6, 8)[:, 7], tg.data[:48].reshape(6, 8)[:, 6])  # still repeated
