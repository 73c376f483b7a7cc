"""Everything that runs ffmpeg: finding the binary, decoding videos to frames, encoding test videos."""

import shutil
import subprocess
from functools import cache
from pathlib import Path

import ffmpeg
import numpy as np


@cache
def ffmpeg_exe() -> str:
    """The system's ffmpeg if there is one, else the binary that the imageio-ffmpeg package ships."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


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
