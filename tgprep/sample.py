"""THE sample format: one video's RGB frames and temporal gradients as WebDataset fields, and back.

Two kinds of sample, told apart by their members and their .json's format_version: the frame kind, here
(format_version 1, `tgprep build --store frames`, the default: .rgb and .tg JPEGs, the fastest to load), and
the video kind (format_version 2 with "kind": "video", `--store video`: one .mp4, TG computed at load; see
tgprep.video_sample, whose read_meta reads either kind). What follows is the frame kind.

A sample is one video:
  __key__  record.key, e.g. "hmdb51_wave_RATRACE_wave_f_nm_np1_fr_goo_37"
  .cls     b"<label>" (0-based), on labeled and val samples only
  .rgb     the frames as JPEGs (4:4:4, quality from the build), concatenated
  .tg      the temporal gradients as JPEGs (4:2:0, same quality), concatenated
  .json    metadata (below), with the byte offsets that cut .rgb and .tg into frames: frame i of a
           modality is payload[offsets[i]:offsets[i + 1]], so a loader decodes only the frames it samples.

Temporal gradient: TG_i = x[k_i + 1] - x[k_i] (next minus previous, sign "next_minus_previous") on the
decoded, resized uint8 frames, before any lossy step, where k_i is the original index of kept frame i: with
--fps the next frame is still the next frame of the ORIGINAL video. TG i pairs with RGB frame i; when the
last decoded frame is kept it has no next frame, so tg_frames is frames or frames - 1.

TG encoding "jpeg-clip128": stored = clip(d, -128, 127) + 128 as an RGB JPEG; d = stored * 1.0 - 128.0
(tg_from_stored). A step of 1, not the paper's 2: on the real HMDB/UCF clips |d| > 127 for 0.09 % of the
values, and at quality 90 the whole mean absolute error (clipping + JPEG) against the exact int16 difference
is 0.74 grey levels (0.31 to 1.34 per clip), below the paper's (d + 255) // 2 JPEG (1.33) and, on every clip,
below a TG derived at load time from the stored RGB JPEGs (0.78), for fewer bytes than the paper's TG
(8.5 vs 8.9 KB per 240p frame). 4:2:0 suits TG (same error per byte as 4:4:4, faster); 4:4:4 suits RGB
(more PSNR per byte). No Huffman optimisation: -9 % bytes for +0.3 ms per image. See BENCHMARKS.md.

The codec is libjpeg-turbo through simplejpeg, which encodes from numpy with a chosen subsampling and decodes with
DCT scaling straight into a given array: 1.3x Pillow's speed encoding RGB and TG, 1.5x decoding, the same decoded
pixels (bench/codec.py). Any baseline JPEG decoder reads the shards; the .json's encodings name the encoder.

.json fields: dataset, path, class, label, split, fps (stored rate), source_fps, frames, tg_frames,
frame_indices (original frame numbers), width, height, source_width, source_height, rgb_offsets,
tg_offsets (frames + 1 and tg_frames + 1 integers), rgb_encoding, tg_encoding, format, format_version,
tgprep_version. Keys are sorted and nothing depends on the clock, so the bytes are deterministic.

Readers check a sample against tgprep.limits before they allocate anything for it: the .json at most
MAX_SAMPLE_JSON_BYTES, .cls at most MAX_CLS_BYTES, width and height 1..MAX_SIDE with at most MAX_PIXELS per
frame, at most one frame per MIN_JPEG_BYTES of its payload, offsets that cut the payload exactly, and a label
below the dataset's class count. Members other than these fields are skipped, never kept.
"""

import io
import itertools
import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import simplejpeg

import tgprep
from tgprep import limits
from tgprep.video import Video, VideoError, VideoStream

FIELDS = ("cls", "json", "mp4", "rgb", "tg")  # the members of both kinds (.mp4: video_sample); readers skip others
FORMAT = "tgprep-sample"
FORMAT_VERSION = 1
TG_SCALE, TG_OFFSET = 1.0, -128.0  # d = stored * TG_SCALE + TG_OFFSET
ENCODER = f"libjpeg-turbo via simplejpeg {simplejpeg.__version__}"
TG_ENCODING = {"name": "jpeg-clip128", "sign": "next_minus_previous", "stored": "clip(d, -128, 127) + 128",
               "scale": TG_SCALE, "offset": TG_OFFSET, "subsampling": "4:2:0", "encoder": ENCODER}
RGB_SUBSAMPLING, TG_SUBSAMPLING = "444", "420"  # best per byte for each (BENCHMARKS.md)
# A payload past SPOOL_BYTES leaves memory for a temporary file in the output folder (not /tmp, often a RAM disk).
# The file has no name where the file system allows (Linux's O_TMPFILE), so a killed worker leaves nothing;
# elsewhere it is unlinked as soon as it is made, and its name matches the *.tar.tmp-* that a build's start-up
# removes.
SPOOL_BYTES, SPOOL_PREFIX = 4 << 20, "spool.tar.tmp-"


class SampleError(ValueError):
    """A sample that is incomplete or malformed, e.g. from a damaged or foreign shard."""


def select_frames(count: int, native_fps: float, fps: float | None) -> np.ndarray:
    """Indices of the frames kept at `fps` frames per second out of `count` at native_fps (None keeps all)."""
    if fps is None or native_fps <= 0 or fps >= native_fps:
        return np.arange(count)
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    kept = math.ceil(count * fps / native_fps - 1e-9)
    return np.unique(np.floor(np.arange(kept) * (native_fps / fps) + 1e-9).astype(np.int64).clip(0, count - 1))


def _candidates(native_fps: float, fps: float | None) -> Iterator[int]:
    """select_frames' candidates, endless and increasing, for a stream whose length is not known yet: a frame that
    has a next frame is kept exactly when it is one (the last frame: see _encode)."""
    if fps is None or native_fps <= 0 or fps >= native_fps:
        return itertools.count()
    if fps <= 0:
        raise ValueError(f"fps must be positive, not {fps}")
    step = native_fps / fps  # the same float operations as select_frames, so the same indices
    return (math.floor(i * step + 1e-9) for i in itertools.count())


def temporal_gradient(frame: np.ndarray, next_frame: np.ndarray) -> np.ndarray:
    """x[k + 1] - x[k] of two uint8 (H, W, 3) frames, exact, as int16."""
    return np.subtract(next_frame, frame, dtype=np.int16)


def encode_tg(diff: np.ndarray, quality: int = 90) -> bytes:
    """One int16 (H, W, 3) TG frame as the JPEG of clip(d, -128, 127) + 128."""
    # Clipped straight into the uint8 image as two's complement bytes; flipping the top bit then adds 128:
    # one new array per frame instead of three, the same bytes.
    stored = np.empty(diff.shape, np.uint8)
    np.clip(diff, -128, 127, out=stored, casting="unsafe")
    stored ^= 128
    return _jpeg(stored, quality, TG_SUBSAMPLING)


def tg_from_stored(stored):
    """Stored uint8 TG pixels (numpy or torch, any shape) back to differences in -128..127, as floats."""
    return stored * TG_SCALE + TG_OFFSET


def make_sample(record, video: Video | VideoStream, *, fps: float | None, quality: int, with_label: bool,
                spool: Path | None = None) -> dict:
    """The WebDataset sample of one video; record is a tgprep.datasets.common.Record.

    video is a Video (frames in memory) or a VideoStream (frames decoded as they are needed); either way the
    frames pass one at a time. The .rgb and .tg payloads are bytes, or, with spool (a folder), files that stay
    in memory up to SPOOL_BYTES and then move to an unnamed temporary file in that folder: the caller copies
    them from the start and closes them (shards.write_shard). A VideoError of the stream goes to the caller.
    """
    width, height = video.size
    if width * height > limits.MAX_PIXELS:  # every reader refuses such frames: never write them
        raise VideoError(f"frames of {width}x{height} are over the readers' limit of {limits.MAX_PIXELS} pixels; "
                         "build with a --short-side, e.g. 256")
    rgb, tg = _Payload(spool), _Payload(spool)
    try:
        indices = _encode(video, fps, quality, rgb, tg)
    except BaseException:
        rgb.file.close()
        tg.file.close()
        raise
    meta = {
        "dataset": record.key.split("_", 1)[0], "path": record.path, "class": record.class_name,
        "label": record.label, "split": record.split,
        "fps": float(fps) if fps is not None and fps < video.fps else video.fps, "source_fps": video.fps,
        "frames": len(indices), "tg_frames": len(tg.offsets) - 1, "frame_indices": indices,
        "width": width, "height": height, "source_width": video.source_size[0], "source_height": video.source_size[1],
        "rgb_offsets": rgb.offsets, "tg_offsets": tg.offsets,
        "rgb_encoding": {"name": "jpeg", "quality": quality, "subsampling": "4:4:4", "encoder": ENCODER},
        "tg_encoding": {**TG_ENCODING, "quality": quality},
        "format": FORMAT, "format_version": FORMAT_VERSION, "tgprep_version": tgprep.__version__,
    }
    sample = {"__key__": record.key, "json": json.dumps(meta, sort_keys=True, separators=(",", ":")).encode(),
              "rgb": rgb.value(), "tg": tg.value()}
    if with_label:
        sample["cls"] = str(record.label).encode()
    return sample


def _encode(video, fps: float | None, quality: int, rgb: "_Payload", tg: "_Payload") -> list[int]:
    """JPEG every kept frame and its TG into the payloads as the frames pass; returns the kept indices.

    Only the previous frame is held: a kept frame is encoded when its next frame arrives, TG = next - it. The last
    frame has no next frame (no TG), and whether it is kept is select_frames' verdict, which needs the frame count
    that only the end of the stream tells.
    """
    candidates = _candidates(video.fps, fps)
    candidate, kept, previous, count = next(candidates), [], None, 0
    for k, frame in enumerate(video):
        if k - 1 == candidate:
            rgb.add(_jpeg(previous, quality, RGB_SUBSAMPLING))
            tg.add(encode_tg(temporal_gradient(previous, frame), quality))
            kept.append(k - 1)
            candidate = next(candidates)
        previous, count = frame, k + 1
    if count and select_frames(count, video.fps, fps)[-1] == count - 1:
        rgb.add(_jpeg(previous, quality, RGB_SUBSAMPLING))
        kept.append(count - 1)
    return kept


class _Payload:
    """One modality's JPEGs, concatenated as they are made, and the offsets that cut them apart again."""

    def __init__(self, spool: Path | None):
        self.file = io.BytesIO() if spool is None else tempfile.SpooledTemporaryFile(SPOOL_BYTES, dir=spool,
                                                                                     prefix=SPOOL_PREFIX)
        self.offsets = [0]

    def add(self, jpeg: bytes) -> None:
        self.file.write(jpeg)
        self.offsets.append(self.offsets[-1] + len(jpeg))

    def value(self):
        """The bytes, or the spooled file, rewound."""
        if isinstance(self.file, io.BytesIO):
            return self.file.getvalue()
        self.file.seek(0)
        return self.file


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


def _jpeg(image: np.ndarray, quality: int, subsampling: str) -> bytes:
    # the decoder's padded rows go in as they are; only a turned frame (a rotated video) needs a copy
    if image.strides[1:] != (3, 1):
        image = np.ascontiguousarray(image)
    return simplejpeg.encode_jpeg(image, quality, "rgb", subsampling)


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
