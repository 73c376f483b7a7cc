"""The frames of a video sample (tgprep.video_sample), decoded at load, and TG computed from them.

A clip wants a few frames and their next frames. Decoding starts at the keyframe at or before each run of them,
and the decoder is sent only the pictures that are wanted or that other pictures refer to: video samples are
encoded so that most pictures are B-frames nothing refers to, which tgprep.h264 tells from the bitstream itself.
Skipping a picture no other refers to changes no other picture, so the frames are those of a decode from the
start, and samples built before B-frames (every picture a reference) decode every frame as they always did.

The .json is checked first (tgprep.video_sample.read_meta), then the MP4's own header against it; decoding is
in-process with PyAV, single-threaded (loader workers are the parallelism), and the decoder refuses frames past
tgprep.limits before allocating them.
"""

import io

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tgprep import h264, limits
from tgprep.sample import SampleError
from tgprep.video_sample import coded_size


def clip_frames(sample: dict, meta: dict, indices, modalities=("rgb", "tg")) -> dict[str, np.ndarray]:
    """{"rgb", "tg": uint8 (len(indices), H, W, 3)} of the kept frames at `indices` (meta from read_meta):
    the decoded frames, and TG as the image clip(next - frame, -128, 127) + 128 that frame samples store."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) and (indices.min() < 0 or indices.max() >= meta["frames"]):
        raise SampleError(f"sample {sample['__key__']}: no frame {int(indices.max())} (it has {meta['frames']})")
    if "tg" in modalities and len(indices) and indices.max() >= meta["tg_frames"]:
        raise SampleError(f"sample {sample['__key__']}: no TG frame {int(indices.max())} "
                          f"(it has {meta['tg_frames']})")
    at = np.asarray(meta["video"]["positions"])[indices].tolist()
    frames = decode_positions(sample, meta, at + [p + 1 for p in at] if "tg" in modalities else at)
    shape, out = (len(at), meta["height"], meta["width"], 3), {}
    if "rgb" in modalities:
        out["rgb"] = np.empty(shape, np.uint8)
        for j, frame in enumerate(frames[:len(at)]):
            out["rgb"][j] = frame
    if "tg" in modalities:
        out["tg"] = tg_image(frames[:len(at)], frames[len(at):], np.empty(shape, np.uint8))
    return out


def tg_image(frames, next_frames, out: np.ndarray | None = None) -> np.ndarray:
    """clip(next - frame, -128, 127) + 128 as uint8 (into out, if given): the image a frame sample stores as a JPEG
    (tgprep.sample), of n frames and their next frames, (n, H, W, 3) arrays or n (H, W, 3) ones."""
    out = np.empty(np.shape(frames), np.uint8) if out is None else out
    shifted = None
    for j, (frame, next_frame) in enumerate(zip(frames, next_frames)):  # a frame at a time: it stays in the cache
        shifted = np.subtract(next_frame, frame, dtype=np.int16, out=shifted)
        shifted += 128
        np.clip(shifted, 0, 255, out=shifted)  # numpy's fast path: the same type in and out
        out[j] = shifted
    return out


def decode_positions(sample: dict, meta: dict, positions: list[int]) -> list[np.ndarray]:
    """uint8 (H, W, 3) RGB of each stored frame at `positions` (any order; a repeat is the same array). Each run is
    decoded from the keyframe at or before its first, sending the decoder only the pictures that are wanted or
    that others refer to (tgprep.h264): the same pixels as decoding every frame from the start."""
    key, video, height, width = sample["__key__"], meta["video"], meta["height"], meta["width"]
    pts, keyframes = video["pts"], np.asarray(video["keyframes"])
    out = [None] * len(positions)
    slots = {}  # pts -> where its frame goes in out
    for j, p in enumerate(positions):
        slots.setdefault(pts[p], []).append(j)
    try:
        with av.open(io.BytesIO(sample["mp4"]), "r", format="mp4") as container:
            stream = _checked_stream(container, meta, len(pts), key)
            size = h264.length_size(stream.codec_context.extradata)
            scaler = VideoReformatter()  # one libswscale context per clip, not one per frame as to_ndarray makes
            for keyframe, run in _runs(sorted(set(positions)), keyframes):
                container.seek(pts[keyframe], stream=stream, backward=True, any_frame=False)
                for frame in _decode_run(container, stream, {pts[p] for p in run}, size):
                    rgb = scaler.reformat(frame, format="rgb24", threads=1).to_ndarray()[:height, :width]
                    if rgb.shape != (height, width, 3):
                        raise SampleError(f"sample {key}: .mp4 frame at pts {frame.pts} is {frame.width}x"
                                          f"{frame.height}, not the {width}x{height} its .json says")
                    for j in slots.pop(frame.pts, []):
                        out[j] = rgb
    except SampleError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise SampleError(f"sample {key}: .mp4 does not decode ({e}); the member is damaged or truncated") from None
    if slots:
        raise SampleError(f"sample {key}: .mp4 has no frame at pts {min(slots)}, which its .json lists")
    return out


def _runs(positions: list[int], keyframes: np.ndarray) -> list[tuple[int, list[int]]]:
    """(keyframe, positions) runs to decode: a new run starts where a keyframe lies after the previous position,
    since seeking to it skips the frames between."""
    runs = []
    for p, k in zip(positions, keyframes[np.searchsorted(keyframes, positions, side="right") - 1].tolist()):
        if runs and k <= runs[-1][1][-1]:
            runs[-1][1].append(p)
        else:
            runs.append((k, [p]))
    return runs


def _decode_run(container, stream, wanted: set, size: int | None):
    """The decoded frames whose pts are in `wanted`, from the keyframe the container was sought to: every packet up
    to the last wanted one is sent to the decoder, but for the disposable ones not wanted; then the decoder is
    drained. A run lies within one keyframe's group (_runs), so what the next keyframe has not brought never comes."""
    unsent, codec = set(wanted), stream.codec_context
    for n, packet in enumerate(container.demux(stream)):
        if packet.is_keyframe and n:
            break
        if packet.pts in unsent:
            unsent.discard(packet.pts)
        elif packet.size == 0 or h264.is_disposable(packet, size):
            continue  # the end-of-stream packet is the drain below
        yield from (frame for frame in codec.decode(packet) if frame.pts in wanted)
        if not unsent:
            break
    yield from (frame for frame in codec.decode(None) if frame.pts in wanted)


def _checked_stream(container, meta: dict, count: int, key: str):
    """The MP4's one video stream, once its own header agrees with the .json (codec, size, frame count)."""
    streams = container.streams.video
    if len(container.streams) != 1 or len(streams) != 1:
        raise SampleError(f"sample {key}: .mp4 holds {len(container.streams)} streams, "
                          "not one video stream")
    stream = streams[0]
    header = (stream.codec_context.name, stream.codec_context.width, stream.codec_context.height, stream.frames)
    expected = ("h264", *coded_size(meta["width"], meta["height"]), count)
    if header != expected:
        raise SampleError(f"sample {key}: .mp4 header says {header[0]} {header[1]}x{header[2]}, {header[3]} frames; "
                          f"its .json says {expected[0]} {expected[1]}x{expected[2]}, {count} frames")
    stream.thread_count = 1  # loader workers are the parallelism
    # a stream may change its size midway: the decoder refuses any frame past the bound before allocating it
    stream.codec_context.options = {"max_pixels": str(limits.MAX_PIXELS)}
    return stream


def check_decodes(sample: dict, meta: dict) -> None:
    """Decode every frame of a video sample (meta from read_meta), one at a time, and check that the frames
    are the ones its .json lists; SampleError otherwise. For `tgprep verify`."""
    key, pts = sample["__key__"], meta["video"]["pts"]
    try:
        with av.open(io.BytesIO(sample["mp4"]), "r", format="mp4") as container:
            found = [frame.pts for frame in container.decode(_checked_stream(container, meta, len(pts), key))]
    except SampleError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise SampleError(f"sample {key}: .mp4 does not decode ({e}); the member is damaged or truncated") from None
    if found != pts:
        raise SampleError(f"sample {key}: .mp4 decodes to {len(found)} frames, not the {len(pts)} its .json lists")
