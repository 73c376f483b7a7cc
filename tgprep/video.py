"""Everything that runs ffmpeg: decoding videos to frames (in-process with PyAV, one frame at a time) with their
presentation times, and encoding test videos."""

import shutil
import subprocess
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import ffmpeg
import numpy as np
from av.video.reformatter import VideoReformatter

from tgprep import planes
from tgprep.planes import Picture


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
    """A whole decoded video in memory: what decode() returns, and what tests build samples from."""

    frames: np.ndarray               # (T, H, W, 3) uint8: every decoded frame at the native rate, resized, upright
    fps: float                       # the stream's native average frame rate
    source_size: tuple[int, int]     # (width, height) upright, before resizing
    times: np.ndarray | None = None  # (T,) presentation times, seconds after the first frame; None: every 1 / fps
    duration: float | None = None    # the last frame's time plus its duration; None: T / fps

    def __post_init__(self):
        step = 1 / self.fps if self.fps > 0 else 1.0
        if self.times is None:
            self.times = np.arange(len(self.frames)) * step
        if self.duration is None:
            self.duration = float(self.times[-1]) + step if len(self.frames) else 0.0

    @property
    def size(self) -> tuple[int, int]:
        return self.frames.shape[2], self.frames.shape[1]

    @property
    def pixels(self) -> dict:
        return {"format": "rgb24", "step": "from_rgb"}

    def __iter__(self):
        return iter(self.frames)

    def pictures(self, full_range: bool = True):
        """Every frame as JPEG's planes (tgprep.planes.from_rgb; limited range for H.264) with its time."""
        return (planes.from_rgb(frame, float(time), full_range) for frame, time in zip(self.frames, self.times))


def target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side at short_side and the aspect kept; never larger; 0 keeps the size."""
    short = min(width, height)
    if short_side <= 0 or short <= short_side:
        return width, height
    return round(width * short_side / short), round(height * short_side / short)


# Real HMDB files carry tags that are not UTF-8. PyAV before 19 raises on them unless told to replace; PyAV 19
# (Python 3.12 and newer) decodes every tag with surrogateescape and no longer takes the argument.
TAG_DECODING = {"metadata_errors": "replace"} if int(av.__version__.split(".")[0]) < 19 else {}

REPORT_EVERY = 100  # frames between progress reports: a few a second, and a sign of life to a supervisor


class VideoStream:
    """The first video stream of a file, decoded one frame at a time: memory does not grow with its length.

    Opening decodes the first frame, so fps, source_size, size and pixels are known before iterating. It is
    iterated once, in one of three ways, each giving every frame in presentation order, upright, with the short
    side resized, and raising VideoError if fewer than 2 frames decode:
      iter(stream)      (H, W, 3) uint8 RGB (libswscale, as the ffmpeg program converts);
      stream.timed()    (time, RGB frame) pairs, the time in seconds after the first frame (see _Clock);
      stream.pictures() tgprep.planes.Picture: JPEG's Y, Cb and Cr planes and the time, never RGB (the build's;
                        full_range False: the same in limited range, for H.264).
    Once iterated, duration is the last frame's time plus its duration. Use it as a context manager, which closes
    the file.

    Decoding runs in-process with PyAV (ffmpeg's libraries without starting a program: several times faster than
    piping from the ffmpeg program on HMDB-length clips, see BENCHMARKS.md); the scaling is libswscale's bicubic,
    as the ffmpeg program's. A variable frame rate stream gives every decoded frame once, with its own time; audio
    is never decoded.
    The timeout bounds the time spent decoding (not what the caller does between frames): it is checked after
    every frame, and PyAV's I/O interrupt stops a stalled read. A decoder stuck inside one C call cannot be
    stopped in-process; only killing the worker can.
    """

    def __init__(self, path: Path, short_side: int = 256, timeout: float = 300.0, on_frames=None):
        path = Path(path)
        self._on_frames = on_frames  # called with the count of frames decoded since its last call
        if not path.exists():
            raise VideoError("missing")
        if not path.is_file():
            raise VideoError("not a regular file")  # a FIFO or a device could block forever
        self.timeout, self.decoded, self._spent = timeout, 0, 0.0
        started = time.monotonic()
        try:
            self._container = av.open(str(path), timeout=timeout, **TAG_DECODING)
        except av.error.FFmpegError as e:
            raise VideoError(f"not a video: {e.strerror}") from e
        try:
            if not self._container.streams.video:
                raise VideoError("no video stream")
            stream = self._container.streams.video[0]
            # One thread each: a build runs one decode per core, where extra threads only add CPU time (BENCHMARKS.md).
            stream.thread_count = 1
            self.fps = float(stream.average_rate or stream.guessed_rate or 0)
            self._clock = _Clock(stream, self._container.format.name == "avi")
            self._raw_frames = self._container.decode(stream)
            self._spent = time.monotonic() - started
            self._first = self._decode()
            if self._first is None:
                raise VideoError("0 frames decoded")
            raw = self._first[0]
            self._turns = round(raw.rotation / 90) % 4  # counter-clockwise quarter turns that make it upright
            self.source_size = (raw.height, raw.width) if self._turns % 2 else (raw.width, raw.height)
            self.size = target_size(*self.source_size, short_side)
            self._unturned = self.size[::-1] if self._turns % 2 else self.size  # the scalers work before the turn
            self.pixels = planes.describe(raw)  # and, once pictures() is asked for, the step they take
            self.duration = None
            self._scaler = VideoReformatter()  # one per video, so libswscale's context is set up once, not per frame
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    def __iter__(self):
        return (rgb for _, rgb in self.timed())

    def timed(self):
        return self._frames(self._convert)

    def pictures(self, full_range: bool = True):
        self._planes = planes.PlaneConverter(self._unturned, self._turns, full_range)
        if self._first is not None:
            self.pixels["step"] = self._planes.step(self._first[0])
        return (picture for _, picture in self._frames(self._picture))

    def _frames(self, convert):
        """(time, convert(frame)) of every frame, reporting progress; the stream's one pass."""
        if self._first is None:
            raise RuntimeError("a VideoStream is iterated once")
        decoded, self._first = self._first, None
        while decoded is not None:
            raw, when = decoded
            yield when, convert(raw, when)
            if self._on_frames and self.decoded % REPORT_EVERY == 0:
                self._on_frames(REPORT_EVERY)
            decoded = self._decode()
        if self._on_frames and self.decoded % REPORT_EVERY:
            self._on_frames(self.decoded % REPORT_EVERY)
        if self.decoded < 2:
            raise VideoError(f"{self.decoded} frame{'' if self.decoded == 1 else 's'} decoded")
        self.duration = self._clock.end()

    def _decode(self):
        """(the next decoded av.VideoFrame, its time), or None at the end; decoding errors and the timeout as
        VideoError."""
        started = time.monotonic()
        try:
            raw = next(self._raw_frames, None)
        except av.error.FFmpegError as e:
            self._spent += time.monotonic() - started
            reason = self._timed_out() if self._spent > self.timeout else f"corrupt video: {e.strerror}"
            raise VideoError(reason) from e
        self._spent += time.monotonic() - started
        if raw is None:
            return None
        self.decoded += 1
        return raw, self._clock(raw)

    def _convert(self, raw, _) -> np.ndarray:
        """One frame as RGB, resized by libswscale and turned upright by numpy (a view, no copy)."""
        started = time.monotonic()
        # a fixed output size also absorbs streams whose frame size changes midway
        rgb = self._scaler.reformat(raw, *self._unturned, format="rgb24", interpolation="BICUBIC",
                                    threads=1).to_ndarray()
        self._check_time(started)
        return np.rot90(rgb, self._turns) if self._turns else rgb

    def _picture(self, raw, when: float) -> Picture:
        """One frame as JPEG's planes (tgprep.planes), resized and turned upright."""
        started = time.monotonic()
        picture = self._planes(raw, when)
        self._check_time(started)
        return picture

    def _check_time(self, started: float) -> None:
        self._spent += time.monotonic() - started
        if self._spent > self.timeout:
            raise VideoError(self._timed_out())

    def _timed_out(self) -> str:
        return f"timed out after {self.timeout:g} s"


class _Clock:
    """Each decoded frame's presentation time, in seconds after the first frame, as the ffmpeg program takes it.

    An AVI holds one timestamp per packet, in decoding order, which libavformat also gives as the pts: frames
    reordered by B-frames get pts out of order (HMDB's AVIs: 1, 4, 3, 5, 7, 6 ...), so AVI frames are timed by
    their dts (2, 3, 4 ...), as the ffmpeg program, which sees no pts there, times them. Other containers hold real
    pts, taken as FFmpeg's best-effort timestamp takes them: the pts, unless they have gone backwards more often
    than the dts. A time that is missing or not after the previous one is the previous time plus that frame's
    duration, so times always rise. Whole ticks of the stream's time base inside (exact), seconds out.
    """

    def __init__(self, stream, by_dts: bool):
        self.base = Fraction(stream.time_base or Fraction(1, 1000))
        rate = stream.average_rate or stream.guessed_rate
        # the average frame duration in ticks, a last resort
        self.step = max(1, round(1 / (Fraction(rate) * self.base))) if rate else max(1, round(1 / (25 * self.base)))
        self.by_dts = by_dts
        self.faulty_pts = self.faulty_dts = 0
        self.last_pts = self.last_dts = self.first = self.last = None
        self.last_duration = self.step

    def __call__(self, raw) -> float:
        pts, dts = raw.pts, raw.dts
        if dts is not None:
            self.faulty_dts += self.last_dts is not None and dts <= self.last_dts
            self.last_dts = dts
        if pts is not None:
            self.faulty_pts += self.last_pts is not None and pts <= self.last_pts
            self.last_pts = pts
        by_pts = pts is not None and (dts is None or (not self.by_dts and self.faulty_pts <= self.faulty_dts))
        when = pts if by_pts else dts
        if self.last is None:
            self.first = when = 0 if when is None else when
            self.last_duration = raw.duration or self.step
        else:
            if when is None or when <= self.last:
                when = self.last + self.last_duration
            gap, duration = when - self.last, raw.duration or 0
            # as FFmpeg: a duration of 1 tick beside a much longer gap is one a demuxer made up
            self.last_duration = duration if duration > 0 and not (duration == 1 and gap > 2) else gap
        self.last = when
        return self.seconds(when - self.first)

    def seconds(self, ticks: int) -> float:
        return ticks * self.base.numerator / self.base.denominator

    def end(self) -> float:
        """The last frame's time plus its duration: where the video ends."""
        return self.seconds(self.last + self.last_duration - self.first)


def decode(path: Path, short_side: int = 256, timeout: float = 300.0) -> Video:
    """Every frame of the video at once as RGB, with its time (see VideoStream for which frames, and how): for
    tests, benchmarks and predictions on short clips; a build streams instead."""
    with VideoStream(path, short_side, timeout) as stream:
        times, frames = zip(*stream.timed())
    return Video(np.stack(frames), stream.fps, stream.source_size, np.array(times), stream.duration)


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
