"""Clip augmentation on the training device, batched: the reference's RandAugment (strong), normalisation, test crops.

The weak augmentation (random resized crop over the whole frame and flip, shared by RGB and TG) happens in the
loader's workers (tgtrain.clips), so clips arrive here as uint8 (B, T, S, S, 3) and weak views need no work.

Clips come and go as uint8 tensors (B, T, H, W, 3), and every op rounds to 8 bits as an image library would; only
normalize() makes the model's float (B, 3, T, H, W). TG clips are treated exactly like RGB images: the paper
augments and normalises the stored TG image, not the signed difference. Everything here runs in float32, also under
bf16 autocast. Random parameters are drawn on the CPU from `generator` (a seeded CPU generator gives the same draws
whatever the device) and reach the device in one non-blocking copy per call; nothing here waits on the device.
"""

import functools
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

MEAN = (123.675, 116.28, 103.53)  # ImageNet statistics on the 0..255 scale, as the reference config
STD = (58.395, 57.12, 57.375)
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's RGB -> L
CUTOUT_FILL = 128.0  # imgaug's Cutout default; geometric ops uncover black (imgaug's Affine default, cval 0)


@functools.lru_cache(maxsize=None)
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """MEAN, STD and LUMA on `device`, made together on first use there: no host-to-device copy per step."""
    values = {"mean": MEAN, "std": STD, "luma": LUMA}
    return {name: torch.tensor(v, dtype=torch.float32, device=device) for name, v in values.items()}


def _fp32(x):
    """No autocast inside: grid sampling and colour arithmetic in bf16 would be off by grey levels."""
    return torch.autocast(x.device.type, enabled=False)


def _to_device(numbers: torch.Tensor, device: torch.device) -> torch.Tensor:
    """One CPU tensor onto the device without blocking the host (pinned first, as CUDA needs for that)."""
    if device.type == "cuda":
        return numbers.pin_memory().to(device, non_blocking=True)
    return numbers.to(device, non_blocking=True)


def _planar(x):
    """uint8 (B, T, H, W, 3) -> float (B, T, 3, H, W), contiguous, in one pass."""
    return x.permute(0, 1, 4, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)


def _packed(x):
    """float (B, T, 3, H, W) -> uint8 (B, T, H, W, 3), rounded and clamped."""
    y = x.round().clamp_(0, 255).permute(0, 1, 3, 4, 2)
    return y.to(torch.uint8, memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------------------------------- strong ops
# Each op is a pair: `params` runs on the CPU and gives each clip's numbers (n, k) from its signed level (n,) in
# [-1, 1] (the magnitude with a random sign), two uniforms (n, 2) and the frame's (h, w); `apply` maps float clips
# (n, T, 3, H, W) with values 0..255 on the device, given those numbers there. The same numbers apply to every
# frame of a clip; statistics (contrast's mean, autocontrast's range, equalize's histogram) are per frame, as
# imgaug applies the reference's ops frame by frame. "Reference" below is the paper's code (an MMAction2 fork),
# whose strong augmentation is imgaug's RandAugment at magnitude 9 of 10 ("level" 0.9): each op's value there is
# given beside ours, at that level.


class Op(NamedTuple):
    name: str
    params: Callable  # (level (n,), uniforms (n, 2), h, w) -> (n, k) float32 on the CPU
    apply: Callable   # (clips (n, T, 3, H, W), numbers (n, k)) -> clips, on the clips' device


def _per_clip(v):
    return v.reshape(-1, 1, 1, 1, 1)


def _theta(m, h, w):
    """Pixel maps m (n, 3, 3), output -> input about the frame centre, as grid_sample's (n, 6) in [-1, 1] units."""
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0]))
    return (torch.linalg.inv(to_pixels) @ m @ to_pixels)[:, :2].reshape(-1, 6)


def _maps(level, rows, cols, values):
    m = torch.eye(3).repeat(len(level), 1, 1)
    for r, c, v in zip(rows, cols, values):
        m[:, r, c] = v
    return m


def _warp(x, theta):
    """Resample float clips (n, T, C, H, W) through one affine map per clip (theta (n, 6)), shared by its frames;
    bilinear, as imgaug's Affine (order 1), and uncovered pixels black, as its cval 0."""
    n, t, c, h, w = x.shape
    grid = F.affine_grid(theta.view(n, 2, 3), [n, t * c, h, w], align_corners=False)
    y = F.grid_sample(x.reshape(n, t * c, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return y.reshape(n, t, c, h, w)


def _shear(level, h, w, row, col):
    # reference: shear=17.19 * level degrees (ShearX / ShearY): 15.5 degrees at level 0.9. imgaug 0.4 hands the angle
    # to scikit-image's AffineTransform, which maps (x, y) to (x - sin(a) y, cos(a) y), or the transpose for y;
    # this is its inverse, as the output -> input map
    angle = torch.deg2rad(17.19 * level)
    return _theta(_maps(level, [row, col], [col, col], [torch.tan(angle), 1 / torch.cos(angle)]), h, w)


def _translate(level, h, w, row):
    # reference: percent=0.2 * level of the width (TranslateX) or height (TranslateY): 18 % at level 0.9
    return _theta(_maps(level, [row], [2], [0.2 * level * (w if row == 0 else h)]), h, w)


def _rotate(level, uniforms, h, w):
    # reference: rotate=30 * level degrees (imgaug's Rotate): 27 degrees at level 0.9
    angle = torch.deg2rad(30 * level)
    cos, sin = angle.cos(), angle.sin()
    return _theta(_maps(level, [0, 0, 1, 1], [0, 1, 0, 1], [cos, -sin, sin, cos]), h, w)


def _posterize(level, uniforms, h, w):
    # reference: nb_bits=max(1, int(4 * level)) kept (imgaug's Posterize, as PIL's): 3 bits at level 0.9 (the
    # reference's rule, from TF's AutoAugment, grows weaker with the level: 4 bits at level 1)
    bits = (4 * level.abs()).floor().clamp(min=1)
    return (2 ** (8 - bits))[:, None]


def _posterized(x, p):
    step = _per_clip(p[:, 0])
    return (x / step).floor() * step


def _solarize(level, uniforms, h, w):
    # reference: threshold=256 * level (imgaug's Solarize inverts values >= int(threshold)): 230 at level 0.9
    return (256 * level.abs()).floor()[:, None]


def _solarized(x, p):
    return torch.where(x >= _per_clip(p[:, 0]), 255 - x, x)


def _factor(level, uniforms, h, w):
    # reference: factor=1.8 * level + 0.1 for EnhanceColor, -Contrast, -Brightness, -Sharpness (imgaug's pillike,
    # PIL's ImageEnhance), with no random sign: 1.72 at level 0.9
    return (1.8 * level.abs() + 0.1)[:, None]


def _blend(x, degenerate, p):
    """PIL's ImageEnhance: factor 1 keeps x, 0 gives `degenerate`."""
    return degenerate + _per_clip(p[:, 0]) * (x - degenerate)


def _luma(x):
    return (x * _constants(x.device)["luma"].reshape(1, 1, 3, 1, 1)).sum(2, keepdim=True)


def _color(x, p):
    return _blend(x, _luma(x), p)


def _contrast(x, p):
    return _blend(x, _luma(x).mean(dim=(2, 3, 4), keepdim=True), p)


def _brightness(x, p):
    return _blend(x, torch.zeros_like(x), p)


def _sharpness(x, p):
    """Blend with PIL's SMOOTH filter result; as in PIL the one-pixel border keeps its values."""
    n, t, c, h, w = x.shape
    # SMOOTH's kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 is a 3x3 box sum plus 4 times the centre
    box = 9 * F.avg_pool2d(x.reshape(n * t, c, h, w), 3, stride=1).reshape(n, t, c, h - 2, w - 2)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = ((box + 4 * x[..., 1:-1, 1:-1]) / 13).round()
    return _blend(x, degenerate, p)


def _autocontrast(x, p):
    """Stretch each channel of each frame to 0..255 (reference: imgaug's pillike Autocontrast, cutoff 0)."""
    lo = x.amin(dim=(3, 4), keepdim=True)
    hi = x.amax(dim=(3, 4), keepdim=True)
    scale = 255 / (hi - lo).clamp(min=1)
    return torch.where(hi > lo, (x - lo) * scale, x)


def _equalize(x, p):
    """Histogram-equalise each channel of each frame with PIL's lookup table rule (reference: pillike Equalize)."""
    n, t, c, h, w = x.shape
    values = x.reshape(n * t * c, h * w).long()
    hist = torch.zeros(n * t * c, 256, dtype=x.dtype, device=x.device)
    hist.scatter_add_(1, values, torch.ones_like(values, dtype=x.dtype))
    last = 255 - (hist.flip(1) > 0).int().argmax(1, keepdim=True)  # the highest occupied bin
    step = ((hist.sum(1, keepdim=True) - hist.gather(1, last)) / 255).floor()
    before = hist.cumsum(1) - hist
    lut = ((before + (step / 2).floor()) / step.clamp(min=1)).floor().clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256.0, device=x.device))  # PIL leaves such channels alone
    return lut.gather(1, values).reshape(n, t, c, h, w)


def _invert(x, p):
    return 255 - x


def _cutout_box(level, uniforms, h, w):
    # reference: imgaug's Cutout(size=0.2 * level, squared=True): a square of side 0.2 * level of the height (18 %
    # at level 0.9) centred uniformly in the frame, filled with 128; corners truncated to pixels as imgaug does
    half = 0.1 * level.abs() * h
    cx, cy = uniforms[:, 0] * w, uniforms[:, 1] * h
    corners = torch.stack([cx - half, cy - half, cx + half, cy + half], 1).trunc()
    return torch.minimum(corners.clamp(min=0), torch.tensor([w, h, w, h], dtype=torch.float32))


def _cutout(x, p):
    h, w = x.shape[-2:]
    ys = torch.arange(h, device=x.device, dtype=x.dtype).reshape(h, 1)
    xs = torch.arange(w, device=x.device, dtype=x.dtype)
    x0, y0, x1, y1 = (_per_clip(p[:, i]) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)  # (n, 1, 1, H, W)
    return torch.where(inside, CUTOUT_FILL, x)


def _none(level, uniforms, h, w):
    return torch.zeros(len(level), 0)


# The reference's list, in its order (imgaug's "default" RandAugment, which applies its chosen ops in this order)
OPS = (
    Op("shear_x", lambda level, u, h, w: _shear(level, h, w, 0, 1), _warp),
    Op("shear_y", lambda level, u, h, w: _shear(level, h, w, 1, 0), _warp),
    Op("translate_x", lambda level, u, h, w: _translate(level, h, w, 0), _warp),
    Op("translate_y", lambda level, u, h, w: _translate(level, h, w, 1), _warp),
    Op("rotate", _rotate, _warp),
    Op("posterize", _posterize, _posterized),
    Op("solarize", _solarize, _solarized),
    Op("color", _factor, _color),
    Op("contrast", _factor, _contrast),
    Op("brightness", _factor, _brightness),
    Op("sharpness", _factor, _sharpness),
    Op("autocontrast", _none, _autocontrast),
    Op("equalize", _none, _equalize),
    Op("invert", _none, _invert),
    Op("cutout", _cutout_box, _cutout),
)


def _draw(x, generator, n_ops, magnitude, ops):
    """On the CPU: which clips each op applies to, in which turn, with which numbers.

    Returns [(op, clips, k)] and the numbers, flat: per entry its clip indices, then their (clips, k) numbers."""
    b, _, h, w, _ = x.shape
    # n_ops distinct ops per clip (imgaug's SomeOf), applied in the list's order
    chosen = torch.rand(b, len(ops), generator=generator).argsort(1)[:, :n_ops].sort(1).values
    levels = magnitude * torch.where(torch.rand(b, n_ops, generator=generator) < 0.5, -1.0, 1.0)
    uniforms = torch.rand(b, n_ops, 2, generator=generator)
    plan, numbers = [], []
    for turn in range(n_ops):
        for k, op in enumerate(ops):
            rows = (chosen[:, turn] == k).nonzero()[:, 0]
            if len(rows):
                params = op.params(levels[rows, turn], uniforms[rows, turn], h, w).float()
                plan.append((op, len(rows), params.shape[1]))
                numbers += [rows.float(), params.flatten()]
    return plan, numbers


def _run(x, plan, pieces):
    y = _planar(x)
    for op, n, k in plan:
        rows, params = next(pieces), next(pieces)
        rows = rows.long()
        y.index_copy_(0, rows, op.apply(y.index_select(0, rows), params.view(n, k)).round_().clamp_(0, 255))
    return _packed(y)


def strong(*clips, generator=None, n_ops=2, magnitude=0.9, ops=OPS) -> list:
    """The reference's RandAugment on each uint8 (B, T, H, W, 3) batch of `clips`; returns them augmented, in order.

    Per clip: n_ops distinct ops drawn from `ops` (imgaug's SomeOf, without replacement), applied in the list's
    order, at `magnitude` (0..1; 0.9 is the reference's 9 of 10), each geometric op with a random sign, the same
    parameters for all the clip's frames. Each batch draws its own ops, so give RGB and TG together: their ops are
    independent, as the paper's, and all their parameters reach the device in one copy.
    """
    with _fp32(clips[0]):
        drawn = [_draw(x, generator, n_ops, magnitude, ops) for x in clips]
        flat = [piece for _, numbers in drawn for piece in numbers]
        sizes = [len(piece) for piece in flat]
        pieces = iter(torch.split(_to_device(torch.cat(flat) if flat else torch.zeros(0), clips[0].device), sizes))
        return [_run(x, plan, pieces) for x, (plan, _) in zip(clips, drawn)]


# ---------------------------------------------------------------------------------------------------- model input


def normalize(x, memory_format=torch.contiguous_format):
    """uint8 (B, T, H, W, 3) -> float32 (B, 3, T, H, W) with ImageNet mean and std, also under autocast.

    TG clips get the same mean and std as RGB: the paper normalises the stored TG image like an RGB image.
    memory_format: the layout the network wants (channels_last_3d is the uint8 clip's own, so it costs no transpose).
    """
    with _fp32(x):
        y = x.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=memory_format)
        mean, std = _constants(x.device)["mean"], _constants(x.device)["std"]
        return y.sub_(mean.reshape(3, 1, 1, 1)).div_(std.reshape(3, 1, 1, 1))


def resize_short(x, size: int):
    """Resize uint8 clips (B, T, H, W, 3) so that the short side is `size`, keeping the aspect ratio."""
    b, t, h, w, _ = x.shape
    scale = size / min(h, w)
    out = (round(h * scale), round(w * scale))
    with _fp32(x):
        y = F.interpolate(_planar(x).reshape(b * t, 3, h, w), size=out, mode="bilinear", antialias=True,
                          align_corners=False)
        return _packed(y.reshape(b, t, 3, *out))


def _crop(x, top, left, size):
    return x[:, :, top:top + size, left:left + size]


def center_crop(x, size: int):
    """The centred size x size crop of uint8 clips (B, T, H, W, 3); validation's single view."""
    h, w = x.shape[2:4]
    return _crop(x, (h - size) // 2, (w - size) // 2, size)


def three_crops(x, size: int):
    """Three size x size crops along the long side (left, centre, right or top, centre, bottom), as the paper's
    test protocol (MMAction2's ThreeCrop); resize the short side to `size` first to cover the whole frame."""
    h, w = x.shape[2:4]
    if w >= h:
        return [_crop(x, (h - size) // 2, left, size) for left in (0, (w - size) // 2, w - size)]
    return [_crop(x, top, (w - size) // 2, size) for top in (0, (h - size) // 2, h - size)]
