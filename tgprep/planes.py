"""JPEG's own pixels, straight from the decoder: full-range BT.601 Y, Cb and Cr planes at 4:2:0, never RGB.

A baseline JPEG (JFIF) stores Y = 0.299 R + 0.587 G + 0.114 B and Cb, Cr centred on 128, all over 0..255 (full
range, the BT.601 matrix), and its decoders make RGB from them. Every source the toolkit reads decodes to 4:2:0
planes already, so the build hands the decoder's planes to the JPEG encoder after at most one step in native code
or a table (which sources need which step: tgprep.sample's docstring). TG is the difference of two frames'
planes (difference), which is the linear map of their RGB difference that a JPEG of the TG image would hold.

H.264 (tgprep.video_sample) takes the same planes in limited range instead, as video is usually coded: for it
the decoder's planes go as they are, the table step is skipped and a full-range source goes through libswscale.

A Picture keeps its three planes in one buffer laid out as a yuv420p frame of even sides (an odd last row or
column repeats its neighbour): the layout TurboJPEG reads 4:2:0 planes in (it reads a Y plane to even sides),
the one an H.264 encoder takes, and one numpy operation per frame for TG instead of one per plane.
Frames held as RGB arrays (tgprep.video.Video: tests, made-up videos) become planes by from_rgb, the conversion a
JPEG encoder applies to RGB input: chroma averaged over each 2 x 2 block.
"""

import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

FORMATS_420 = ("yuv420p", "yuvj420p")  # 8-bit 4:2:0 planar, the decoders' usual output
BT601 = (5, 6)  # AVCOL_SPC_BT470BG and AVCOL_SPC_SMPTE170M: the same matrix
UNTAGGED = 2  # AVCOL_SPC_UNSPECIFIED: taken as BT.601, as libswscale and JPEG decoders do
FULL_RANGE = 2  # AVCOL_RANGE_JPEG
# Limited range puts black at 16 and white at 235 (chroma 16..240 around 128); full range stretches both to 0..255.
Y_TABLE = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
C_TABLE = np.clip(np.round((np.arange(256) - 128) * 255 / 224 + 128), 0, 255).astype(np.uint8)


def _pairs(table: np.ndarray) -> np.ndarray:
    """The table applied to two bytes at once, indexed by them read as one uint16: numpy widens every index to 64
    bits, so half as many indices cost 5 % to 15 % less CPU for the whole step (bench/stages.py)."""
    both = np.arange(1 << 16)
    return table[both & 255].astype(np.uint16) | table[both >> 8].astype(np.uint16) << 8


Y_PAIRS, C_PAIRS = _pairs(Y_TABLE), _pairs(C_TABLE)


class Picture:
    """One frame as JPEG's planes, y (H, W), cb and cr (ceil(H / 2), ceil(W / 2)) uint8 views of one buffer, data:
    a yuv420p frame of the even size (W + W % 2, H + H % 2), and the frame's time (seconds after the first)."""

    __slots__ = ("data", "width", "height", "even_y", "y", "cb", "cr", "time")

    def __init__(self, width: int, height: int, time: float = 0.0):
        even_w, even_h = width + width % 2, height + height % 2
        luma, chroma = even_w * even_h, even_w * even_h // 4
        self.data = np.empty(luma + 2 * chroma, np.uint8)
        self.width, self.height, self.time = width, height, time
        self.even_y = self.data[:luma].reshape(even_h, even_w)
        self.y = self.even_y[:height, :width]
        self.cb = self.data[luma:luma + chroma].reshape(even_h // 2, even_w // 2)
        self.cr = self.data[luma + chroma:].reshape(even_h // 2, even_w // 2)

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.cb, self.cr

    def fill(self, planes) -> "Picture":
        """Copy Y, Cb and Cr in (each of this picture's shape), the odd edge repeated; returns self."""
        for plane, source in zip(self.planes, planes):
            np.copyto(plane, source)
        return self.even_edges()

    def even_edges(self) -> "Picture":
        """Repeat an odd Y plane's last column and row into the buffer's even sides; returns self."""
        padded, width, height = self.even_y, self.width, self.height
        if width % 2:
            padded[:height, width] = padded[:height, width - 1]
        if height % 2:
            padded[height] = padded[height - 1]
        return self


def plane_views(frame) -> list[np.ndarray]:
    """The planes of an av.VideoFrame as numpy views of its buffers (no copy; each view keeps the frame alive)."""
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]


def describe(frame) -> dict:
    """What a decoded frame's pixels are, for a sample's .json."""
    full = full_range(frame)
    matrix = {1: "bt709", 5: "bt601", 6: "bt601", UNTAGGED: "untagged"}.get(frame.colorspace, str(frame.colorspace))
    return {"format": frame.format.name, "range": "full" if full else "limited", "matrix": matrix}


def full_range(frame) -> bool:
    return frame.format.name == "yuvj420p" or frame.color_range == FULL_RANGE


class PlaneConverter:
    """Decoded frames of one video to Pictures of BT.601 planes at (width, height) before any turn, in full range
    (JPEG's) or limited (full_range False: H.264's); one libswscale context per video, as for RGB (tgprep.video)."""

    def __init__(self, size: tuple[int, int], turns: int, full_range: bool = True):
        self.size, self.turns = size, turns  # turns: counter-clockwise quarter turns that make the frame upright
        self.full_range = full_range
        self._scaler = VideoReformatter()

    def step(self, frame) -> str:
        """The step a frame needs: "none", "range table" or "libswscale" (checked per frame: a stream may change)."""
        if ((frame.width, frame.height) != self.size or frame.format.name not in FORMATS_420
                or frame.colorspace not in (*BT601, UNTAGGED)):
            return "libswscale"
        if full_range(frame) == self.full_range:
            return "none"
        return "range table" if self.full_range else "libswscale"

    def __call__(self, frame, time: float) -> Picture:
        step = self.step(frame)
        if step == "libswscale":  # one pass: resize (bicubic, as the RGB path), matrix and range; a fixed size also
            # absorbs streams whose frame size changes midway
            target = ColorRange.JPEG if self.full_range else ColorRange.MPEG
            frame = self._scaler.reformat(frame, *self.size, format="yuv420p", dst_colorspace=Colorspace.ITU601,
                                          dst_color_range=target, interpolation="BICUBIC", threads=1)
        planes = [np.rot90(p, self.turns) for p in plane_views(frame)] if self.turns else plane_views(frame)
        picture = Picture(planes[0].shape[1], planes[0].shape[0], time)
        if step != "range table":
            return picture.fill(planes)
        for plane, source, table, pairs in zip(picture.planes, planes, (Y_TABLE, C_TABLE, C_TABLE),
                                               (Y_PAIRS, C_PAIRS, C_PAIRS)):
            if self.turns or plane.shape[1] % 2:  # a turned plane's rows are not contiguous
                np.take(table, source, out=plane)
            else:
                np.take(pairs, source.view(np.uint16), out=plane.view(np.uint16))
        return picture.even_edges()


def from_rgb(rgb: np.ndarray, time: float = 0.0, full_range: bool = True) -> Picture:
    """(H, W, 3) uint8 RGB as JPEG's planes, as a JPEG encoder converts RGB: JFIF's BT.601 full-range matrix,
    then Cb and Cr averaged over each 2 x 2 block (an odd last row or column averaged with itself); or the same
    squeezed into limited range."""
    x = rgb.astype(np.float32)
    y = x @ np.float32([0.299, 0.587, 0.114])
    cb = x @ np.float32([-0.168736, -0.331264, 0.5])
    cr = x @ np.float32([0.5, -0.418688, -0.081312])
    if not full_range:
        y, cb, cr = 16 + y * np.float32(219 / 255), cb * np.float32(224 / 255), cr * np.float32(224 / 255)
    planes = [_to_uint8(y), _to_uint8(_halved(cb) + 128), _to_uint8(_halved(cr) + 128)]
    return Picture(rgb.shape[1], rgb.shape[0], time).fill(planes)


def _halved(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    padded = np.pad(plane, ((0, h % 2), (0, w % 2)), mode="edge")
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).mean((1, 3))


def _to_uint8(plane: np.ndarray) -> np.ndarray:
    return np.clip(np.round(plane), 0, 255).astype(np.uint8)


def difference(previous: Picture, following: Picture) -> Picture:
    """TG's planes: clip(following - previous, -128, 127) + 128 of each of Y, Cb and Cr, over the whole buffer at
    once (the repeated edges stay repeated). A JPEG decoder makes RGB from them linearly and clamps it to 0..255,
    which is clip(d, -128, 127) + 128 of the RGB difference d (tgprep.sample's TG image) wherever no plane was
    clipped itself: the clip happens where the decoder clamps."""
    tg = Picture(previous.width, previous.height, previous.time)
    # clipped straight into the uint8 buffer as two's complement bytes; flipping the top bit then adds 128
    np.clip(np.subtract(following.data, previous.data, dtype=np.int16), -128, 127, out=tg.data, casting="unsafe")
    tg.data ^= 128
    return tg
