"""Where a clip lies in a video: its frame numbers, the JPEG reduction to decode it at, and its crop.

Pure functions of numbers and uint8 arrays (T, H, W, 3), run in the loader's workers. The training crop is
the reference's weak augmentation (MMAction2's RandomResizedCrop -> Resize -> Flip): a box drawn over the
whole frame, resized to the training size, mirrored half of the time, the same for the RGB and the TG of
a clip and for all its frames. The reference first resizes the short side to 256; MMAction2's lazy mode
then fuses that resize, the crop and the final resize into one resize of the box, which is what
`resized_crop` does on the decoded frame.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect-ratio range, as in the reference configs


def train_indices(n: int, clip_len: int, interval: int, rng: np.random.Generator) -> np.ndarray:
    """clip_len frame numbers `interval` apart from a random start, looping when the video is too short."""
    span = (clip_len - 1) * interval + 1
    # a short video can start anywhere: it loops, and every start gives a different clip
    start = rng.integers(n - span + 1) if n >= span else rng.integers(n)
    return (start + np.arange(clip_len) * interval) % n


def test_indices(n: int, clip_len: int, interval: int, clips: int) -> list[np.ndarray]:
    """`clips` clips with starts spread uniformly over the video (centred in their slots), looping if short."""
    span = (clip_len - 1) * interval + 1
    room = max(n - span + 1, 1)
    starts = ((np.arange(clips) + 0.5) * room / clips).astype(np.int64)
    return [(start + np.arange(clip_len) * interval) % n for start in starts]


def choose_reduce(stored_short_side: int, size: int) -> int:
    """The largest JPEG decoding reduction (1, 2, 4, 8) that keeps the short side at least `size`."""
    reduce = 1
    while reduce < 8 and -(-stored_short_side // (reduce * 2)) >= size:
        reduce *= 2
    return reduce


def crop_box(height: int, width: int, rng: np.random.Generator, area=(0.08, 1.0), ratio=RATIO,
             tries: int = 10) -> tuple[int, int, int, int]:
    """(x0, y0, w, h) of a random resized crop of a height x width frame, by MMAction2's RandomResizedCrop.

    Up to `tries` draws of an area (a fraction of the frame's, uniform in `area`) and an aspect ratio
    (log-uniform in `ratio`); the first box that fits in the frame wins, at a uniform position; when none
    fits, the centred square of the short side.
    """
    target = height * width * rng.uniform(*area, tries)
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), tries))
    widths, heights = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))
    fits = np.flatnonzero((widths >= 1) & (heights >= 1) & (widths <= width) & (heights <= height))
    if len(fits) == 0:
        side = min(height, width)
        return (width - side) // 2, (height - side) // 2, side, side
    w, h = int(widths[fits[0]]), int(heights[fits[0]])
    return int(rng.integers(width - w + 1)), int(rng.integers(height - h + 1)), w, h


def square_box(height: int, width: int, where: float) -> tuple[int, int, int, int]:
    """(x0, y0, side, side): the square of the short side at `where` along the long side (0 start, 1 end)."""
    side = min(height, width)
    offset = round(where * (max(height, width) - side))
    return (0, offset, side, side) if height > width else (offset, 0, side, side)


def resized_crop(frames: np.ndarray, box: tuple[int, int, int, int], size: int, flip: bool = False) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3): the box (x0, y0, w, h) resized to size x size, mirrored when flip.

    A box of the right size already is returned as a view of frames, unless flipped. The flip is torch's copy of
    the box before the resize, which the resize then needs no other copy of: over random boxes of 240p frames, half
    of them flipped, 0.61 ms per 8-frame crop against 0.90 for flipping the result (numpy's reversed view is free
    but makes the batch's stack 30x slower). The filter is symmetric: both orders give the same bytes (tested)."""
    x0, y0, w, h = box
    crop = torch.from_numpy(frames[:, y0:y0 + h, x0:x0 + w])
    if flip:
        crop = crop.flip(2)
    if (h, w) != (size, size):
        # torch's uint8 antialiased bilinear is Pillow's filter (within 1 grey level), ~9x faster than a loop of it;
        # its fast path wants channels-last memory, which a crop of a wider frame is not: 2.5x slower without it
        planar = crop.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        resized = F.interpolate(planar, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        crop = resized.permute(0, 2, 3, 1)
    return crop.numpy()


def crop_square(frames: np.ndarray, where: float, size: int) -> np.ndarray:
    """(T, H, W, 3) -> (T, size, size, 3): the short side's square at `where` (see square_box), resized to size."""
    return resized_crop(frames, square_box(*frames.shape[1:3], where), size)


SQUARES = {1: (0.5,), 3: (0.0, 0.5, 1.0)}  # test crops -> where their squares lie along the long side


def test_views(frames_at, n: int, clip_len: int, interval: int, clips: int, crops: int, size: int) -> np.ndarray:
    """A video's test views, uint8 (crops * clips, clip_len, size, size, 3), view v = crop * clips + clip: `clips`
    uniform clips (test_indices) of its n frames, each as `crops` squares of the short side resized to size.
    frames_at(indices) returns the video's frames at those sorted, distinct numbers, so that each frame is decoded
    once for all clips and cropped once per square; the views are gathered from them with one copy."""
    indices = np.stack(test_indices(n, clip_len, interval, clips))
    unique, inverse = np.unique(indices, return_inverse=True)
    frames = frames_at(unique)
    views = np.empty((len(SQUARES[crops]), *indices.shape, size, size, 3), np.uint8)
    for view, position in zip(views, SQUARES[crops]):
        np.take(crop_square(frames, position, size), inverse.reshape(indices.shape), axis=0, out=view,
                mode="clip")  # "clip": unbuffered; the indices are in range anyway
    return views.reshape(-1, *views.shape[2:])
