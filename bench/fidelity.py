"""How close stored frames are to the source, against references that do not count a chroma filter as loss.

Used by bench/prep.py. A video decodes to Y, Cb and Cr planes; RGB is made from them with some chroma upsampling,
which differs between libswscale (tgprep.video.decode, the ffmpeg program) and a JPEG decoder. Three references:
  decoded RGB   tgprep.video.decode's frames (libswscale): the old metric, and TG's exact difference "as now";
  planes        the decoder's own planes, stretched to full range without rounding: PSNR of Y, Cb and Cr;
  planes' RGB   RGB made from those planes as libjpeg-turbo's decoder makes it (its "fancy" triangle upsampling of
                chroma, JFIF's BT.601 matrix), unrounded: what a perfect JPEG of the planes would decode to.
A stored JPEG's own planes are read without upsampling: Y by simplejpeg (libjpeg-turbo) as grey, Cb and Cr by
FFmpeg's JPEG decoder, whose inverse DCT differs from libjpeg-turbo's by 1 in about 3 % of the pixels.
"""

import av
import numpy as np
import simplejpeg

from tgprep import planes
from tgprep.video import TAG_DECODING

JFIF = np.array([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


def source_planes(path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every frame's planes at native size as float64 full range: the decoder's yuv420p, stretched unrounded
    where it is limited range (every video of the prep corpus is limited-range yuv420p)."""
    out = []
    with av.open(str(path), **TAG_DECODING) as container:
        for frame in container.decode(video=0):
            y, cb, cr = (p.astype(np.float64) for p in planes.plane_views(frame))
            if planes.describe(frame)["range"] == "limited":
                y, cb, cr = (y - 16) * 255 / 219, (cb - 128) * 255 / 224 + 128, (cr - 128) * 255 / 224 + 128
            out.append((y, cb, cr))
    return out


def _triangle(plane: np.ndarray, axis: int, size: int) -> np.ndarray:
    """libjpeg's fancy upsampling along one axis: each sample gives two, 3/4 of itself and 1/4 of its neighbour on
    that side (the edges repeat), cropped to `size`."""
    c = np.moveaxis(plane, axis, 0)
    before, after = np.concatenate([c[:1], c[:-1]]), np.concatenate([c[1:], c[-1:]])
    out = np.empty((2 * len(c), *c.shape[1:]))
    out[0::2], out[1::2] = 0.75 * c + 0.25 * before, 0.75 * c + 0.25 * after
    return np.moveaxis(out[:size], 0, axis)


def planes_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """(H, W, 3) float RGB of full-range planes as a JPEG decoder makes it, clipped to 0..255, not rounded."""
    h, w = y.shape
    chroma = [_triangle(_triangle(c - 128, 0, h), 1, w) for c in (cb, cr)]
    return np.clip(np.stack([y, *chroma], -1) @ JFIF.T, 0, 255)


def jpeg_planes(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A JPEG's own Y, Cb and Cr planes, before any upsampling."""
    decoder = av.CodecContext.create("mjpeg", "r")
    frame = decoder.decode(av.Packet(data))[0]
    _, cb, cr = planes.plane_views(frame)
    return simplejpeg.decode_jpeg(data, "GRAY")[..., 0], cb, cr


def squared_errors(stored: tuple, reference: tuple) -> np.ndarray:
    """Sums of squared differences of Y, Cb and Cr planes."""
    return np.array([((s.astype(np.float64) - r) ** 2).sum() for s, r in zip(stored, reference)])


def psnr(squared: float, count: int) -> float:
    return float(10 * np.log10(255**2 * count / squared)) if squared else float("inf")


def jpeg_bytes_444(frames: np.ndarray, quality: int) -> tuple[list[bytes], list[bytes]]:
    """The frames and their TG as the build stored them before it took the planes: RGB 4:4:4 JPEGs of the RGB
    frames, TG clip(d, -128, 127) + 128 of their RGB difference at 4:2:0."""
    rgb = [simplejpeg.encode_jpeg(np.ascontiguousarray(x), quality, "rgb", "444") for x in frames]
    tg = []
    for a, b in zip(frames[:-1], frames[1:]):
        stored = (np.clip(np.subtract(b, a, dtype=np.int16), -128, 127) + 128).astype(np.uint8)
        tg.append(simplejpeg.encode_jpeg(stored, quality, "rgb", "420"))
    return rgb, tg


def decode_all(jpegs: list[bytes]) -> np.ndarray:
    return np.stack([simplejpeg.decode_jpeg(j) for j in jpegs])


def read_payload(sample: dict, modality: str, meta: dict) -> list[bytes]:
    """A sample's stored JPEGs of one modality, as bytes."""
    offsets = meta[f"{modality}_offsets"]
    return [bytes(sample[modality][a:b]) for a, b in zip(offsets, offsets[1:])]
