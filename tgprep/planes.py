"""JPEG's own pixels, straight from the decoder: full-range BT.601 Y, Cb and Cr planes at 4:2:0, never RGB.

A baseline JPEG (JFIF) stores Y = 0.299 R + 0.587 G + 0.114 B and Cb, Cr centred on 128, all over 0..255 (full
range, the BT.601 matrix), and its decoders make RGB from them. Every source the toolkit reads decodes to 4:2:0
planes already, so the build hands the decoder's planes to the JPEG encoder after at most one step in native code
or a table (which sources need which step: tgprep.sample's docstring). TG is the difference of two frames'
planes (difference), which is the linear map of their RGB difference that a JPEG of the TG image would hold.

Frames held as RGB arrays (tgprep.video.Video: tests, made-up videos) become planes by from_rgb, the conversion a
JPEG encoder applies to RGB input: chroma averaged over each 2 x 2 block.
"""

from typing import NamedTuple

import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

FORMATS_420 = ("yuv420p", "yuvj420p")  # 8-bit 4:2:0 planar, the decoders' usual output
BT601 = (5, 6)  # AVCOL_SPC_BT470BG and AVCOL_SPC_SMPTE170M: the same matrix
UNTAGGED = 2  # AVCOL_SPC_UNSPECIFIED: taken as BT.601, as libswscale and JPEG decoders do
FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# Limited range puts black at 16 and white at 235 (chroma 16..240 around 128); full range stretches both to 0..255.
Y_TABLE = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
C_TABLE = np.clip(np.round((np.arange(256) - 128) * 255 / 224 + 128), 0, 255).astype(np.uint8)
STEPS = ("none", "range table", "libswscale")


class Picture(NamedTuple):
    """One frame as JPEG's planes: y (H, W), cb and cr (ceil(H / 2), ceil(W / 2)) uint8, and its time."""

    y: np.ndarray
    cb: np.ndarray
    cr: np.ndarray
    time: float  # presentation time, seconds after the video's first frame

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.cb, self.cr


def plane_views(frame) -> list[np.ndarray]:
    """The planes of an av.VideoFrame as numpy views of its buffers (no copy; each view keeps the frame alive)."""
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]


def describe(frame) -> dict:
    """What a decoded frame's pixels are, for a sample's .json."""
    full = frame.format.name == "yuvj420p" or frame.color_range == FULL_RANGE
    matrix = {1: "bt709", 5: "bt601", 6: "bt601", UNTAGGED: "untagged"}.get(frame.colorspace, str(frame.colorspace))
    return {"format": frame.format.name, "range": "full" if full else "limited", "matrix": matrix}


class PlaneConverter:
    """Decoded frames of one video to JPEG's planes at (width, height) before any turn; one libswscale context
    per video, as for RGB (tgprep.video)."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self._scaler = VideoReformatter()

    def step(self, frame) -> str:
        """The step a frame needs: "none", "range table" or "libswscale" (checked per frame: a stream may change)."""
        if ((frame.width, frame.height) != self.size or frame.format.name not in FORMATS_420
                or frame.colorspace not in (*BT601, UNTAGGED)):
            return "libswscale"
        return "none" if frame.format.name == "yuvj420p" or frame.color_range == FULL_RANGE else "range table"

    def __call__(self, frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        step = self.step(frame)
        if step == "none":
            return tuple(plane_views(frame))
        if step == "range table":  # 15 % less CPU than libswscale's range conversion (bench/stages.py)
            y, cb, cr = plane_views(frame)
            return np.take(Y_TABLE, y), np.take(C_TABLE, cb), np.take(C_TABLE, cr)
        # one pass: resize (bicubic, as the RGB path), matrix and range; a fixed size also absorbs streams whose
        # frame size changes midway
        converted = self._scaler.reformat(frame, *self.size, format="yuv420p", dst_colorspace=Colorspace.ITU601,
                                          dst_color_range=ColorRange.JPEG, interpolation="BICUBIC", threads=1)
        return tuple(plane_views(converted))


def from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB as JPEG's planes, as a JPEG encoder converts RGB: JFIF's BT.601 full-range matrix,
    then Cb and Cr averaged over each 2 x 2 block (an odd last row or column averaged with itself)."""
    x = rgb.astype(np.float32)
    y = x @ np.float32([0.299, 0.587, 0.114])
    cb = x @ np.float32([-0.168736, -0.331264, 0.5]) + 128
    cr = x @ np.float32([0.5, -0.418688, -0.081312]) + 128
    return _to_uint8(y), _to_uint8(_halved(cb)), _to_uint8(_halved(cr))


def _halved(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    padded = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean((1, 3))


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    return np.clip(np.round(plane), 0, 255).astype(np.uint8)


def turned(planes, turns: int) -> tuple[np.ndarray, ...]:
    """Planes turned counter-clockwise by `turns` quarter turns: copies, since a JPEG encoder reads rows that lie
    contiguous (a rotated video is rare; the others pass as they are)."""
    return tuple(np.ascontiguousarray(np.rot90(p, turns)) for p in planes) if turns else tuple(planes)


def difference(previous, following) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TG's planes: clip(following - previous, -128, 127) + 128 of each of Y, Cb and Cr (Pictures or plane
    triples). A JPEG decoder makes RGB from them linearly and clamps it to 0..255, which is clip(d, -128, 127) +
    128 of the RGB difference d (tgprep.sample's TG image) wherever no plane was clipped itself: the clip happens
    where the decoder clamps."""
    out = []
    for a, b in zip(previous[:3], following[:3]):
        # clipped straight into the uint8 plane as two's complement bytes; flipping the top bit then adds 128
        stored = np.empty(a.shape, np.uint8)
        np.clip(np.subtract(b, a, dtype=np.int16), -128, 127, out=stored, casting="unsafe")
        stored ^= 128
        out.append(stored)
    return tuple(out)
