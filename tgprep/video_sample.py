"""The video sample kind (`tgprep build --store video`): the video itself, re-encoded once, and TG at load.

A video sample is one video:
  __key__  as a frame sample's
  .cls     b"<label>", on labeled and val samples only
  .mp4     the kept frames (and, with --fps, each one's original next frame) as H.264 in an MP4, at the
           build's short side, a keyframe every KEYFRAME_INTERVAL frames, no audio
  .json    a frame sample's metadata (tgprep.sample) without the JPEG offsets, with format_version 2,
           kind "video", and under "video" what a loader needs to seek: the stream's time_base, the pts of
           every stored frame in presentation order, the positions of its keyframes, and stored_indices,
           the original frame number of every stored frame.

TG is not stored. A loader (tgprep.video_decode) decodes each sampled frame and its next frame (from the keyframe
at or before them, skipping the B-frames that no other frame refers to) and computes TG exactly as the frame kind
defines it: d = x[k + 1] - x[k] on the decoded uint8 frames, with k + 1 the next frame of the ORIGINAL video
also under --fps, as the image clip(d, -128, 127) + 128 that frame samples store as JPEG. The frames are the
re-encoded video's, so both RGB and TG carry the H.264 error (BENCHMARKS.md measures it), not the JPEG one.

Bytes are deterministic: the ffmpeg program's libx264 in one thread (see _encoder_command), bit-exact muxing,
no clock in the .json. Readers check the .json against tgprep.limits (read_meta) and the MP4's own header before
decoding, and decode in-process with PyAV, single-threaded.
"""

import io
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tgprep import limits
from tgprep.sample import SPOOL_BYTES, SPOOL_PREFIX, SampleError, frame_pairs, meta_json, shared_meta
from tgprep.sample import read_meta as read_frame_meta
from tgprep.video import Video, VideoStream, ffmpeg_exe

KIND, FORMAT_VERSION = "video", 2
# The encoder gets the frames' planes (tgprep.planes: BT.601 4:2:0, never RGB) in limited range, as video is coded:
# a limited-range source's planes as they are, and at the same CRF 10 % fewer bytes than full range.
ENCODER, PIX_FMT, COLOR_RANGE = "libx264", "yuv420p", "tv"
# CRF 18 at x264's superfast preset, tuned for fast decoding (no CABAC, no deblocking), with 5 B-frames between
# references, none of them a reference: a loader skips those a clip does not want (tgprep.video_decode), so a
# clip decodes about 27 frames instead of 60. Chosen by bench/storage.py's table (BENCHMARKS.md) on Kinetics clips:
# 2.1-2.2 build CPU ms per frame against 6.3-8.2 at medium CRF 17 (the earlier default), 1.88x the original files'
# bytes (1.96x), loading at 0.41x-0.47x the frame shards' clips per CPU-second (0.38x-0.40x), for about 0.6 grey
# levels more TG error (3.43 against 2.83); veryfast, the next preset up, took 2.4-3.4 ms. The keyframe interval
# (--keyframe-interval) trades bytes against the frames a clip decodes: 16 and 64 loaded no differently.
CRF, PRESET, TUNE, B_FRAMES, KEYFRAME_INTERVAL = 18, "superfast", "fastdecode", 5, 32
# Always B_FRAMES B-frames between references (b-adapt 0), none of them a reference (b-pyramid none)
B_PLACEMENT = "b-adapt=0:b-pyramid=none"
# An H.264 frame in an MP4 takes at least its 4-byte size entry and a few bytes of slice: a member of N bytes
# holds at most N / MIN_FRAME_BYTES frames, whatever the .json says.
MIN_FRAME_BYTES = 8


def is_video(sample: dict) -> bool:
    """Whether a sample is of the video kind (it has an .mp4 member), not the frame kind (.rgb and .tg)."""
    return "mp4" in sample


# -- building -----------------------------------------------------------------------------------------------

def make_video_sample(record, video: Video | VideoStream, *, fps: float | None, with_label: bool,
                      spool: Path | None = None, keyframe_interval: int = KEYFRAME_INTERVAL) -> dict:
    """The video sample of one video (record: a tgprep.datasets.common.Record); frames pass one at a time.

    The encoder writes into spool (a folder; None: the system's temporary folder). The .mp4 is bytes, or past
    SPOOL_BYTES that file, rewound, its name already gone, as tgprep.sample.make_sample's payloads: the caller
    closes it.
    """
    # The encoder writes a named file in the spool folder (an MP4 is finished by seeking back), whose name goes
    # as soon as the encoder is done; a killed worker's leftover matches the *.tmp* a build's start-up removes.
    fd, name = tempfile.mkstemp(dir=spool, prefix=SPOOL_PREFIX, suffix=".mp4")
    file = os.fdopen(fd, "w+b")
    try:
        kept, times, stored = _encode(video, fps, keyframe_interval, name)
        os.unlink(name)
        time_base, pts, keyframes = _index(file)
        if len(pts) != len(stored):
            raise RuntimeError(f"the encoder wrote {len(pts)} frames of {len(stored)}")
        at = {k: p for p, k in enumerate(stored)}
        text = meta_json({
            **shared_meta(record, video, fps, kept, times), "tg_frames": sum(k + 1 in at for k in kept),
            "video": {"encoder": ENCODER, "crf": CRF, "preset": PRESET, "tune": TUNE, "b_frames": B_FRAMES,
                      "b_placement": B_PLACEMENT, "pix_fmt": PIX_FMT, "color_range": COLOR_RANGE,
                      "keyframe_interval": keyframe_interval, "time_base": time_base, "pts": pts,
                      "keyframes": keyframes, "stored_indices": stored},
            "kind": KIND, "format_version": FORMAT_VERSION})
    except BaseException:
        file.close()
        if os.path.exists(name):
            os.unlink(name)
        raise
    large = spool is not None and file.seek(0, io.SEEK_END) > SPOOL_BYTES
    file.seek(0)
    data = file if large else file.read()  # a small one leaves the disk at once
    if not large:
        file.close()
    sample = {"__key__": record.key, "json": text, "mp4": data}
    if with_label:
        sample["cls"] = str(record.label).encode()
    return sample


def _encode(video, fps: float | None, keyframe_interval: int, path: str) -> tuple[list[int], list, list[int]]:
    """Encode the kept frames and their original next frames into an MP4 at path; returns the kept original frame
    numbers, their times (to the microsecond) and the stored original frame numbers. A frame is stored when it is
    kept or follows a kept frame (tgprep.sample.frame_pairs says which, as the frames pass)."""
    encoder = subprocess.Popen(_encoder_command(video.fps, coded_size(*video.size), keyframe_interval, path),
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish() -> None:
        errors = encoder.stderr.read().decode(errors="replace").strip()
        if encoder.wait() != 0:
            raise RuntimeError(f"the encoder failed: {errors.splitlines()[-1] if errors else encoder.returncode}")

    kept, times, stored = [], [], []
    try:
        for k, picture, _, keep in frame_pairs(video, fps, full_range=False):
            if keep:
                kept.append(k)
                times.append(round(picture.time, 6))
            if keep or (kept and kept[-1] == k - 1):
                encoder.stdin.write(picture.data)  # a yuv420p frame of the coded size (tgprep.planes)
                stored.append(k)
        encoder.stdin.close()
        finish()
    except BrokenPipeError:  # the encoder stopped: say why
        finish()
        raise
    finally:
        if encoder.poll() is None:
            encoder.kill()
            encoder.wait()
    return kept, times, stored


def _encoder_command(fps: float, size: tuple[int, int], keyframe_interval: int, path: str) -> list[str]:
    """The ffmpeg program encoding raw full-range 4:2:0 planes from its stdin into an MP4 at path.

    The program, not PyAV in-process: PyAV's bundled libx264 gave other bytes on reruns of the same frames (6 hashes
    in 6 encodes of one 192x128 clip, whatever its thread settings), the ffmpeg program the same bytes every time.
    One thread and bit-exact flags make the bytes depend only on the frames and the ffmpeg version.
    """
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", PIX_FMT, "-color_range", COLOR_RANGE, "-s", f"{size[0]}x{size[1]}",
            "-framerate", str(rate), "-i", "pipe:",
            "-c:v", ENCODER, "-preset", PRESET, "-tune", TUNE, "-bf", str(B_FRAMES), "-crf", str(CRF),
            "-pix_fmt", PIX_FMT, "-color_range", COLOR_RANGE, "-threads", "1",
            "-x264-params", f"keyint={keyframe_interval}:min-keyint={keyframe_interval}:scenecut=0:{B_PLACEMENT}",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-f", "mp4", path]


def coded_size(width: int, height: int) -> tuple[int, int]:
    """The even size that 4:2:0 H.264 codes a width x height video at: an odd side gets one more line, a copy
    of the last, which the reader crops off again."""
    return width + width % 2, height + height % 2


def _index(file) -> tuple[list[int], list[int], list[int]]:
    """(time_base, pts of every frame in presentation order, positions of the keyframes) of an encoded MP4,
    read from its packets (no decoding)."""
    file.seek(0)
    with av.open(file, "r", format="mp4") as container:
        stream = container.streams.video[0]
        packets = sorted((p.pts, p.is_keyframe) for p in container.demux(stream) if p.size)
        time_base = [stream.time_base.numerator, stream.time_base.denominator]
    return time_base, [pts for pts, _ in packets], [i for i, (_, key) in enumerate(packets) if key]


# -- reading ------------------------------------------------------------------------------------------------

def read_meta(sample: dict, classes: int | None = None) -> dict:
    """The checked .json of a sample of either kind: tgprep.sample.read_meta's for frame samples; for video
    samples every count and index checked against the .mp4's size and tgprep.limits (and the label against
    `classes`) before anything is allocated from it. SampleError says what is wrong."""
    if not is_video(sample):
        return read_frame_meta(sample, classes)
    key = sample.get("__key__", "?")
    if "json" not in sample:
        raise SampleError(f"sample {key}: no .json member")
    try:
        meta = limits.parse_json(sample["json"], limits.MAX_SAMPLE_JSON_BYTES, depth=None)
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != KIND:
            raise SampleError(f"sample {key}: has an .mp4 but is not a tgprep video sample "
                              f"(format version {FORMAT_VERSION}, kind {KIND!r})")
        _check(meta, len(sample["mp4"]), classes)
    except ValueError as e:
        raise e if isinstance(e, SampleError) else SampleError(f"sample {key}: .json {e}") from None
    return meta


def _check(meta: dict, size: int, classes: int | None) -> None:
    """ValueError unless the video fields are sane for an .mp4 of `size` bytes."""
    video = meta.get("video")
    if not isinstance(video, dict):
        raise ValueError("has no 'video' object")
    most = size // MIN_FRAME_BYTES
    for name in ("pts", "keyframes", "stored_indices"):
        if not isinstance(video.get(name), list) or len(video[name]) > most:
            raise ValueError(f"video {name!r} is not a list of at most {most} numbers (the .mp4's bytes allow)")
    stored, pts, keys = (np.array(video[n], dtype=object) for n in ("stored_indices", "pts", "keyframes"))
    for name, values in (("stored_indices", stored), ("pts", pts), ("keyframes", keys)):
        if not all(type(v) is int and 0 <= v < 1 << 62 for v in values) or np.any(np.diff(values) <= 0):
            raise ValueError(f"video {name!r} is not increasing whole numbers")
    limits.count(meta.get("frames"), "field 'frames'", 1, len(stored))
    limits.count(meta.get("tg_frames"), "field 'tg_frames'", 0, meta["frames"])
    for field in ("width", "height"):
        limits.count(meta.get(field), f"field {field!r}", 1, limits.MAX_SIDE)
    limits.count(meta.get("label"), "field 'label'", 0, (classes or limits.MAX_CLASSES) - 1)
    if meta["width"] * meta["height"] > limits.MAX_PIXELS:
        raise ValueError(f"frames of {meta['width']}x{meta['height']} are over the limit of {limits.MAX_PIXELS} pixels")
    kept = meta.get("frame_indices")
    if not isinstance(kept, list) or len(kept) != meta["frames"] or not all(type(k) is int for k in kept):
        raise ValueError("'frame_indices' is not one whole number per frame")
    if len(pts) != len(stored) or not len(keys) or keys[0] != 0 or keys[-1] >= len(stored):
        raise ValueError("video pts, keyframes and stored_indices do not describe the same frames")
    positions = np.searchsorted(np.array(video["stored_indices"]), kept)
    if np.any(positions >= len(stored)) or np.any(stored[positions] != np.array(kept, dtype=object)):
        raise ValueError("'frame_indices' are not all stored frames")
    tg = positions[:meta["tg_frames"]]
    if meta["tg_frames"] and (tg[-1] + 1 >= len(stored) or np.any(stored[tg + 1] != stored[tg] + 1)):
        raise ValueError("a TG frame's next frame is not stored")
    video["positions"] = positions.tolist()  # where each kept frame lies among the stored ones
