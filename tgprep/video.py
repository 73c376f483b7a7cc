"""Everything that runs ffmpeg: decoding videos to frames (in-process with PyAV), and encoding test videos."""

import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import ffmpeg
import numpy as np
from av.video.reformatter import VideoReformatter


@cache
def ffmpeg_exe() -> str:
    """The system's ffmpeg if there is one, else the binary that the imageio-ffmpeg package ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class VideoError(Exception):
    """A video that cannot be decoded; str(e) is the short reason recorded in failures.jsonl."""


@dataclass
class Video:
    frames: np.ndarray               # (T, H, W, 3) uint8: every decoded frame at the native rate, resized, upright
    fps: float                       # the stream's native average frame rate
    source_size: tuple[int, int]     # (width, height) upright, before resizing


def target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at short_side and the aspect kept; never larger; 0 keeps the size."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    return round(width * short_side / short), round(height * short_side / short)


def decode(path: Path, short_side: int = 256, timeout: float = 300.0) -> Video:
    """Every frame of the first video stream, in decoding order, as upright RGB with the short side resized.

    Decoding runs in-process with PyAV (ffmpeg's libraries without starting a program: several times faster than
    piping from the ffmpeg program on HMDB-length clips, see BENCHMARKS.md); the scaling is libswscale's bicubic, as
    the ffmpeg program's. A variable frame rate stream gives every decoded frame once; audio is never decoded.
    The timeout bounds wall time: it is checked after every frame, and PyAV's I/O interrupt stops a stalled
    read. A decoder stuck inside one C call cannot be stopped in-process; only killing the worker can.
    """
    path = Path(path)
    if not path.exists():
        raise VideoError("missing")
    if not path.is_file():
        raise VideoError("not a regular file")  # a FIFO or a device could block forever
    deadline = time.monotonic() + timeout
    try:
        # metadata_errors: real HMDB files carry tags that are not UTF-8
        container = av.open(str(path), timeout=timeout, metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise VideoError(f"not a video: {e.strerror}") from e
    with container:
        if not container.streams.video:
            raise VideoError("no video stream")
        stream = container.streams.video[0]
        try:
            frames, source_size = _upright_frames(container, stream, short_side, deadline)
        except av.error.FFmpegError as e:
            reason = f"timed out after {timeout:g} s" if time.monotonic() > deadline else f"corrupt video: {e.strerror}"
            raise VideoError(reason) from e
        except TimeoutError:
            raise VideoError(f"timed out after {timeout:g} s") from None
        fps = float(stream.average_rate or stream.guessed_rate or 0)
    if len(frames) < 2:
        raise VideoError(f"{len(frames)} frame{'' if len(frames) == 1 else 's'} decoded")
    return Video(frames, fps, source_size)


def _upright_frames(container, stream, short_side: int, deadline: float) -> tuple[np.ndarray, tuple[int, int]]:
    """The decoded frames as one (T, H, W, 3) array, resized by libswscale and turned upright by numpy."""
    # One thread each: a build runs one decode per core, where extra threads only add CPU time (BENCHMARKS.md).
    stream.thread_count = 1
    scaler = VideoReformatter()  # one per video, so libswscale's context is set up once, not per frame
    frames, turns, source_size, size = [], 0, (0, 0), (0, 0)
    for frame in container.decode(stream):
        if not frames:
            turns = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns that make it upright
            source_size = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
            size = target_size(*source_size, short_side)
            size = size[::-1] if turns % 2 else size  # the scaler works before the turn
        # a fixed output size also absorbs streams whose frame size changes midway
        rgb = scaler.reformat(frame, *size, format="rgb24", interpolation="BICUBIC", threads=1)
        frames.append(rgb.to_ndarray())
        if time.monotonic() > deadline:
            raise TimeoutError
    video = np.stack(frames) if frames else np.zeros((0, size[1], size[0], 3), np.uint8)
    return (np.ascontiguousarray(np.rot90(video, turns, axes=(1, 2))) if turns else video), source_size


def decode_ffmpeg(path: Path, short_side: int = 256, timeout: float = 300.0) -> np.ndarray:
    """The same frames as decode(), from the ffmpeg program: the reference that tests and benchmarks compare to.

    ffmpeg turns rotated videos upright itself; PPM output carries each frame's size, so no probing is needed.
    """
    side = short_side if short_side > 0 else 1 << 30
    big = f"gt(min(iw,ih),{side})"  # only ever shrink
    stream = (
        ffmpeg.input(str(path))
        .filter("scale", w=f"if({big},if(lte(iw,ih),{side},-1),iw)", h=f"if({big},if(lte(iw,ih),-1,{side}),ih)",
                flags="bicubic")
        .output("pipe:", format="image2pipe", vcodec="ppm", an=None, sn=None, fps_mode="passthrough")
        .global_args("-hide_banner", "-loglevel", "error", "-nostdin")
    )
    try:
        done = subprocess.run([ffmpeg_exe(), *stream.get_args()], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise VideoError(f"timed out after {timeout:g} s") from None
    if done.returncode != 0 or not done.stdout:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
        raise VideoError(f"not a video: {lines[0]}")
    header = done.stdout.split(b"\n", 3)  # b"P6", b"W H", b"255", pixels...
    width, height = map(int, header[1].split())
    head = len(b"\n".join(header[:3])) + 1
    per_frame = np.frombuffer(done.stdout, np.uint8).reshape(-1, head + width * height * 3)
    return per_frame[:, head:].reshape(-1, height, width, 3)

def encode_video(path: Path, frames: np.ndarray, fps: float, timeout: float = 120.0) -> None:
    """Write (T, H, W, 3) uint8 frames as a video whose codec follows the extension (.avi: MPEG-4 part 2).

    Bit-exact flags and one thread make the bytes depend only on the frames and the ffmpeg version.
    """
    t, h, w, _ = frames.shape
    codec = {".avi": "mpeg4", ".mp4": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}.get(path.suffix.lower(), "mpeg4")
    stream = (
        ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", r=fps)
        .output(str(path), vcodec=codec, pix_fmt="yuv420p", threads=1, **{"q:v": 3, "fflags": "+bitexact", "flags:v": "+bitexact"})
        .overwrite_output()
        .global_args("-hide_banner", "-loglevel", "error")
    )
    cmd = [ffmpeg_exe(), *stream.get_args()]
    done = subprocess.run(cmd, input=np.ascontiguousarray(frames).tobytes(), capture_output=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg could not write {path}: {done.stderr.decode(errors='replace').strip()}")
