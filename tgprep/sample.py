"""THE sample format: one video's RGB frames and temporal gradients as WebDataset fields, and back.

Two kinds of sample, told apart by their members and their .json's format_version: the frame kind, here
(format_version 1, `tgprep build --store frames`, the default: .rgb and .tg JPEGs, the fastest to load), and
the video kind (format_version 2 with "kind": "video", `--store video`: one .mp4, TG computed at load; see
tgprep.video_sample, whose read_meta reads either kind). What follows is the frame kind.

A sample is one video:
  __key__  record.key, e.g. "hmdb51_wave_RATRACE_wave_f_nm_np1_fr_goo_37"
  .cls     b"<label>" (0-based), on labeled and val samples only
  .rgb     the frames as JPEGs (4:2:0, quality from the build), concatenated
  .tg      the temporal gradients as JPEGs (4:2:0, same quality), concatenated
  .json    metadata (below), with the byte offsets that cut .rgb and .tg into frames: frame i of a
           modality is payload[offsets[i]:offsets[i + 1]], so a loader decodes only the frames it samples.

Frames: JPEG's own planes, from the decoder, never RGB. A JPEG holds Y, Cb and Cr as full-range BT.601 and its
decoder makes RGB from them; every source the toolkit reads (HMDB-51 and UCF-101 AVIs, Kinetics mp4s, the
synthetic set) decodes to 4:2:0 planes, so the build encodes those planes themselves (simplejpeg's
encode_jpeg_yuv_planes), at the source's own 4:2:0, after at most one step (tgprep.planes):
  - yuvj420p, or yuv420p tagged full range (MJPEG, some phones), BT.601 or untagged, at the stored size: none,
    the decoder's planes as they are;
  - yuv420p in limited range (16-235: MPEG-4 part 2, H.264, most video), BT.601 or untagged, at the stored
    size: a 256-entry table per plane stretches the range (a third less CPU than libswscale, bench/stages.py);
  - anything else (a --short-side resize, BT.709 or another matrix, 4:2:2, 4:4:4, 10 bits, RGB, grey):
    libswscale in one pass: resize, matrix and range to full-range BT.601 4:2:0.
Untagged matrices are BT.601, as libswscale and JPEG decoders take them. The .json's source_pixels says which
step a video took; frames made in memory as RGB (tgprep.video.Video) are converted as a JPEG encoder converts RGB.
Shards built before this (rgb_encoding subsampling "4:4:4", RGB encoded from rgb24 frames) read the same way.

Temporal gradient: TG_i = x[k_i + 1] - x[k_i] (next minus previous, sign "next_minus_previous") on the
decoded, resized frames, before any lossy step, where k_i is the original index of kept frame i: with
--fps the next frame is still the next frame of the ORIGINAL video. TG i pairs with RGB frame i; when the
last decoded frame is kept it has no next frame, so tg_frames is frames or frames - 1. It is taken on the
planes (tgprep.planes.difference): RGB is a linear map of Y, Cb and Cr, so the planes' difference is that map
of the RGB difference, and the JPEG decoder's clamp to 0..255 is the clip below.

TG encoding "jpeg-clip128": stored = clip(d, -128, 127) + 128 as a JPEG; d = stored * 1.0 - 128.0
(tg_from_stored). A step of 1, not the paper's 2: on the real HMDB/UCF clips |d| > 127 for 0.09 % of the
values. At quality 90 the whole mean absolute error (clipping + JPEG) against the exact int16 difference of the
decoded RGB frames is 1.16 grey levels on bench/prep.py's corpus (1.30 on its real pieces), against 1.77 (1.76) for
the paper's (d + 255) // 2 JPEGs; taken on RGB, as builds did before, it was 1.11 (1.24), since it then shared
those frames' chroma filter; against the RGB a JPEG decoder makes from the source's planes the two are level
(0.95 and 0.96). TG costs fewer bytes than the paper's (8.9 vs 10.1 KB per frame there). No Huffman optimisation:
-9 % bytes for +0.3 ms per image. See BENCHMARKS.md.

Frames kept at --fps: by presentation time, as ffmpeg's fps filter keeps them (keeps, select_frames): a frame is
kept when a tick of the rate, counted from the first frame, falls from its own time until the next frame's; a
frame that several ticks fall on is stored once. On a constant-rate source these are the frames of every
(native / fps)-th index, as before; on a variable-rate one, the real times decide. frame_times holds them.

The codec is libjpeg-turbo through simplejpeg, which encodes from numpy planes and decodes with DCT scaling
straight into a given array: 1.3x Pillow's speed encoding RGB and TG, 1.5x decoding, the same decoded pixels
(bench/codec.py). Any baseline JPEG decoder reads the shards; the .json's encodings name the encoder.

.json fields: dataset, path, class, label, split, fps (stored rate), source_fps, frames, tg_frames,
frame_indices (original frame numbers), frame_times (their presentation times, seconds after the first frame,
to the microsecond), width, height, source_width, source_height, source_pixels (format, range and matrix of the
decoded frames, and the step above), rgb_offsets, tg_offsets (frames + 1 and tg_frames + 1 integers),
rgb_encoding, tg_encoding, format, format_version, tgprep_version. Keys are sorted and nothing depends on the
clock, so the bytes are deterministic.

Readers check a sample against tgprep.limits before they allocate anything for it: the .json at most
MAX_SAMPLE_JSON_BYTES, .cls at most MAX_CLS_BYTES, width and height 1..MAX_SIDE with at most MAX_PIXELS per
frame, at most one frame per MIN_JPEG_BYTES of its payload, offsets that cut the payload exactly, and a label
below the dataset's class count. Members other than these fields are skipped, never kept.
"""

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import simplejpeg

import tgprep
from tgprep import limits, planes
from tgprep.video import Video, VideoError, VideoStream

FIELDS = ("cls", "json", "mp4", "rgb", "tg")  # the members of both kinds (.mp4: video_sample); readers skip others
FORMAT = "tgprep-sample"
FORMAT_VERSION = 1
TG_SCALE, TG_OFFSET = 1.0, -128.0  # d = stored * TG_SCALE + TG_OFFSET
ENCODER = f"libjpeg-turbo via simplejpeg {simplejpeg.__version__}"
PIXELS = "ycbcr-planes"  # what the JPEGs are encoded from: the decoder's planes (tgprep.planes), not RGB
TG_ENCODING = {"name": "jpeg-clip128", "sign": "next_minus_previous", "stored": "clip(d, -128, 127) + 128",
               "scale": TG_SCALE, "offset": TG_OFFSET, "subsampling": "4:2:0", "encoder": ENCODER, "from": PIXELS}
RGB_ENCODING = {"name": "jpeg", "subsampling": "4:2:0", "encoder": ENCODER, "from": PIXELS}
# A tick counts as falling at a frame's time within a millionth of a tick: times are exact fractions made floats.
TICK_SLACK = 1e-6
# A payload past SPOOL_BYTES leaves memory for a temporary file in the output folder (not /tmp, often a RAM disk).
# The file has no name where the file system allows (Linux's O_TMPFILE), so a killed worker leaves nothing;
# elsewhere it is unlinked as soon as it is made, and its name matches the *.tar.tmp-* that a build's start-up
# removes.
SPOOL_BYTES, SPOOL_PREFIX = 4 << 20, "spool.tar.tmp-"


class SampleError(ValueError):
    """A sample that is incomplete or malformed, e.g. from a damaged or foreign shard."""


def keeps(time: float, next_time: float, fps: float | None) -> bool:
    """Whether --fps keeps the frame shown from `time` until `next_time` (the next frame's time, or the video's
    end), both in seconds after the first frame: ffmpeg's fps filter's rule, a tick n / fps (n = 0, 1, ...)
    falls in [time, next_time). None keeps every frame."""
    if fps is None:
        return True
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    return math.ceil(time * fps - TICK_SLACK) < next_time * fps - TICK_SLACK


def select_frames(times: Sequence[float], duration: float, fps: float | None) -> np.ndarray:
    """Indices of the frames that --fps keeps (keeps) of a video whose frames start at `times` (seconds after the
    first frame, rising) and which ends at `duration` (tgprep.video.Video has both)."""
    ends = [*times[1:], duration]
    return np.array([k for k, (t, end) in enumerate(zip(times, ends)) if keeps(t, end, fps)], dtype=np.int64)


def frame_pairs(video, fps: float | None, full_range: bool = True):
    """(k, picture, the next picture or None after the last, kept) for every frame of a Video or VideoStream (its
    pictures(full_range)), each given when its next frame has arrived, since whether a frame is kept depends on
    when the next one is shown (for the last, on the video's end, which only the end of the stream tells). Only
    two frames are held."""
    previous, k = None, -1
    for k, picture in enumerate(video.pictures(full_range)):
        if previous is not None:
            yield k - 1, previous, picture, keeps(previous.time, picture.time, fps)
        previous = picture
    if previous is not None:
        yield k, previous, None, keeps(previous.time, video.duration, fps)


def tg_from_stored(stored):
    """Stored uint8 TG pixels (numpy or torch, any shape) back to differences in -128..127, as floats."""
    return stored * TG_SCALE + TG_OFFSET


def make_sample(record, video: Video | VideoStream, *, fps: float | None, quality: int, with_label: bool,
                spool: Path | None = None) -> dict:
    """The WebDataset sample of one video; record is a tgprep.datasets.common.Record.

    video is a Video (frames in memory) or a VideoStream (frames decoded as they are needed); either way the
    frames pass one at a time, as JPEG's planes (tgprep.planes.Picture). The .rgb and .tg payloads are bytes, or,
    with spool (a folder), files that stay in memory up to SPOOL_BYTES and then move to an unnamed temporary file
    in that folder: the caller copies them from the start and closes them (shards.write_shard). A VideoError of
    the stream goes to the caller.
    """
    width, height = video.size
    if width * height > limits.MAX_PIXELS:  # every reader refuses such frames: never write them
        raise VideoError(f"frames of {width}x{height} are over the readers' limit of {limits.MAX_PIXELS} pixels; "
                         "build with a --short-side, e.g. 256")
    rgb, tg = _Payload(spool), _Payload(spool)
    try:
        indices, times = _encode(video, fps, quality, rgb, tg)
        text = meta_json({**shared_meta(record, video, fps, indices, times), "tg_frames": len(tg.offsets) - 1,
                          "rgb_offsets": rgb.offsets, "tg_offsets": tg.offsets, "format_version": FORMAT_VERSION,
                          "rgb_encoding": {**RGB_ENCODING, "quality": quality},
                          "tg_encoding": {**TG_ENCODING, "quality": quality}})
    except BaseException:
        rgb.close()
        tg.close()
        raise
    sample = {"__key__": record.key, "json": text, "rgb": rgb.value(), "tg": tg.value()}
    if with_label:
        sample["cls"] = str(record.label).encode()
    return sample


def shared_meta(record, video, fps: float | None, kept: list[int], times: list[float]) -> dict:
    """The .json fields of both kinds (tgprep.video_sample's too): the video, and which of its frames are kept."""
    width, height = video.size
    return {
        "dataset": record.key.split("_", 1)[0], "path": record.path, "class": record.class_name,
        "label": record.label, "split": record.split,
        "fps": float(fps) if fps is not None and fps < video.fps else video.fps, "source_fps": video.fps,
        "frames": len(kept), "frame_indices": kept, "frame_times": times,
        "width": width, "height": height, "source_width": video.source_size[0], "source_height": video.source_size[1],
        "source_pixels": video.pixels, "format": FORMAT, "tgprep_version": tgprep.__version__,
    }


def _encode(video, fps: float | None, quality: int, rgb: "_Payload", tg: "_Payload") -> tuple[list, list]:
    """JPEG every kept frame's planes and its TG's into the payloads as the frames pass; returns the kept indices
    and their times (to the microsecond). TG = next - it, so the last frame has none."""
    kept, times = [], []
    for k, picture, following, keep in frame_pairs(video, fps):
        if keep:
            rgb.add(_jpeg(picture, quality))
            if following is not None:
                tg.add(_jpeg(planes.difference(picture, following), quality))
            kept.append(k)
            times.append(round(picture.time, 6))
    return kept, times


def meta_json(meta: dict) -> bytes:
    """A sample's .json bytes (sorted keys: deterministic), refused as a VideoError past the readers' limit."""
    data = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > limits.MAX_SAMPLE_JSON_BYTES:
        raise VideoError(f"{meta['frames']} frames make a .json of {len(data)} bytes, over the readers' limit of "
                         f"{limits.MAX_SAMPLE_JSON_BYTES}; build with a lower --fps")
    return data


class _Payload:
    """One modality's JPEGs, concatenated as they are made, and the offsets that cut them apart again: held as a
    list of JPEGs (joined once, at the end) up to SPOOL_BYTES, then, with a spool folder, in a temporary file there
    (as tempfile.SpooledTemporaryFile would, without copying every JPEG into a growing buffer first)."""

    def __init__(self, spool: Path | None):
        self.spool, self.chunks, self.file, self.offsets = spool, [], None, [0]

    def add(self, jpeg: bytes) -> None:
        self.offsets.append(self.offsets[-1] + len(jpeg))
        if self.file is not None:
            self.file.write(jpeg)
            return
        self.chunks.append(jpeg)
        if self.spool is not None and self.offsets[-1] > SPOOL_BYTES:
            self.file = tempfile.TemporaryFile(dir=self.spool, prefix=SPOOL_PREFIX)
            self.file.writelines(self.chunks)
            self.chunks = None

    def value(self):
        """The bytes, or the spooled file, rewound."""
        if self.file is None:
            return b"".join(self.chunks)
        self.file.seek(0)
        return self.file

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def read_meta(sample: dict, classes: int | None = None) -> dict:
    """The parsed .json of a sample, checked against its payloads and tgprep.limits (and its label against
    `classes`, when given) before anything is allocated from it; SampleError says what is wrong."""
    key = sample.get("__key__", "?")
    if "json" not in sample:
        raise SampleError(f"sample {key}: no .json member")
    try:
        meta = limits.parse_json(sample["json"], limits.MAX_SAMPLE_JSON_BYTES, depth=None)  # typed fields below
    except ValueError as e:
        raise SampleError(f"sample {key}: .json {e}") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise SampleError(f"sample {key}: not a tgprep sample of format version {FORMAT_VERSION}")
    for modality in ("rgb", "tg"):
        if not isinstance(sample.get(modality), (bytes, bytearray, memoryview)):
            raise SampleError(f"sample {key}: no .{modality} member")
    try:
        for modality, field in (("rgb", "frames"), ("tg", "tg_frames")):  # at most one frame per MIN_JPEG_BYTES
            limits.count(meta.get(field), f"field {field!r}", 0, len(sample[modality]) // limits.MIN_JPEG_BYTES)
        for field in ("width", "height"):
            limits.count(meta.get(field), f"field {field!r}", 1, limits.MAX_SIDE)
        limits.count(meta.get("label"), "field 'label'", 0, (classes or limits.MAX_CLASSES) - 1)
    except ValueError as e:
        raise SampleError(f"sample {key}: .json {e}") from None
    if meta["width"] * meta["height"] > limits.MAX_PIXELS:
        raise SampleError(f"sample {key}: .json frames of {meta['width']}x{meta['height']} are over the limit of "
                          f"{limits.MAX_PIXELS} pixels per frame")
    if meta["tg_frames"] not in (meta["frames"], meta["frames"] - 1):
        raise SampleError(f"sample {key}: {meta['tg_frames']} TG frames do not fit {meta['frames']} frames")
    for modality, count in (("rgb", meta["frames"]), ("tg", meta["tg_frames"])):
        _check_offsets(key, modality, meta.get(f"{modality}_offsets"), count, sample[modality])
    return meta


def read_cls(sample: dict, meta: dict) -> int:
    """The label in a sample's .cls, checked to be its .json label (meta from read_meta)."""
    cls = sample.get("cls")
    cls = bytes(cls) if cls is not None and len(cls) <= limits.MAX_CLS_BYTES else None  # a longer one is no label
    if cls is None or cls.strip() != str(meta["label"]).encode():
        raise SampleError(f"sample {sample.get('__key__', '?')}: .cls {cls!r} is not its label {meta['label']}")
    return meta["label"]


def decode_frames(sample: dict, modality: str, indices, reduce: int = 1, meta: dict | None = None) -> np.ndarray:
    """uint8 (n, h, w, 3) of the stored "rgb" or "tg" JPEGs at `indices`; reduce 2/4/8 decodes them smaller.

    reduce uses libjpeg's DCT scaling: a loader whose crops are smaller than the stored frames skips most of
    the decoding work. Sizes are then ceil(width / reduce) x ceil(height / reduce), whatever the sides, as
    libjpeg rounds. meta: the sample's read_meta, when the caller has it already (it is not parsed again).
    Each frame decodes straight into its place in the returned array.
    """
    if modality not in ("rgb", "tg") or reduce not in (1, 2, 4, 8):
        raise ValueError(f"modality must be rgb or tg and reduce 1, 2, 4 or 8, not {modality!r}, {reduce!r}")
    meta = read_meta(sample) if meta is None else meta
    offsets, payload = meta[f"{modality}_offsets"], sample[modality]
    full = (meta["width"], meta["height"])
    width, height = _reduced(full, reduce)
    out = np.empty((len(indices), height, width, 3), np.uint8)
    for j, i in enumerate(indices):
        if not 0 <= i < len(offsets) - 1:
            raise SampleError(f"sample {sample['__key__']}: no {modality} frame {i} (it has {len(offsets) - 1})")
        _unjpeg(payload[offsets[i]:offsets[i + 1]], full, reduce, out[j], f"{sample['__key__']} {modality} frame {i}")
    return out


def _jpeg(picture: planes.Picture, quality: int) -> bytes:
    """A JPEG of a Picture's planes: 4:2:0, no colour conversion. TurboJPEG reads a 4:2:0 Y plane to even sides,
    past an odd one: a Picture's buffer holds the repeated edge there (tgprep.planes)."""
    return simplejpeg.encode_jpeg_yuv_planes(picture.y, picture.cb, picture.cr, quality)


def _unjpeg(data, full: tuple[int, int], reduce: int, out: np.ndarray, what: str) -> None:
    """One stored JPEG into out, (ceil(h / reduce), ceil(w / reduce), 3), once its header matches the .json.

    Asking libjpeg-turbo for at least the rounded-up size picks the smallest DCT scale that gives it, and any
    scale that gives at least ceil(side / reduce) with no more than 1 / reduce gives exactly that size: so
    the size rule holds for every side, tiny ones included (tests/test_sample.py checks 1..64 x each reduce).
    """
    size = _reduced(full, reduce)
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        if (width, height) != full or colorspace not in ("YCbCr", "RGB"):
            raise SampleError(f"{what}: not a readable JPEG of {full[0]}x{full[1]}: its header says {width}x{height} "
                              f"{colorspace}")
        pixels = simplejpeg.decode_jpeg(data, "rgb", min_height=size[1], min_width=size[0], buffer=out)
    except SampleError:
        raise
    except ValueError as e:  # libjpeg-turbo's errors, damaged or truncated data among them
        raise SampleError(f"{what}: not a readable JPEG ({e})") from None
    if pixels.shape != out.shape:
        raise SampleError(f"{what}: decodes to {pixels.shape}, expected {out.shape}")


def _reduced(full: tuple[int, int], reduce: int) -> tuple[int, int]:
    return -(-full[0] // reduce), -(-full[1] // reduce)


def _check_offsets(key: str, modality: str, offsets, count: int, payload) -> None:
    if (not isinstance(offsets, list) or len(offsets) != count + 1
            or not all(isinstance(o, int) for o in offsets)):
        raise SampleError(f"sample {key}: .json {modality}_offsets is not {count + 1} integers")
    if offsets[0] != 0 or any(b <= a for a, b in zip(offsets, offsets[1:])) or offsets[-1] != len(payload):
        raise SampleError(f"sample {key}: {modality}_offsets do not cut the {len(payload)}-byte .{modality} "
                          "into frames (truncated or altered)")
