"""Clip augmentation on the training device, batched: weak crop and flip, RandAugment-style strong ops, test crops."""

import math

import torch
import torch.nn.functional as F

# Clips come and go as uint8 tensors (B, T, H, W, 3), the layout the loader delivers, so that weak and strong compose
# and every op rounds to 8 bits as an image library would; only normalize() makes the model's float (B, 3, T, H, W).
# TG clips are treated exactly like RGB images: the paper augments and normalises the stored TG image, not the signed
# difference. Random parameters are drawn on the CPU (a few numbers per clip) from `generator`, so a seeded CPU
# generator gives the same draws whatever device the clips are on.

MEAN = torch.tensor([123.675, 116.28, 103.53])  # ImageNet statistics on the 0..255 scale, as the reference config
STD = torch.tensor([58.395, 57.12, 57.375])
FILL = 128.0  # what geometric ops and cutout uncover: mid grey, which for a TG image means "no change"
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601-2, PIL's RGB -> L


def _uniform(shape, lo, hi, generator):
    return lo + (hi - lo) * torch.rand(shape, generator=generator)


def _planar(x):
    """uint8 (B, T, H, W, 3) -> float (B, T, 3, H, W), contiguous, in one pass."""
    return x.permute(0, 1, 4, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)


def _packed(x):
    """float (B, T, 3, H, W) -> uint8 (B, T, H, W, 3), rounded and clamped."""
    y = x.round().clamp_(0, 255).permute(0, 1, 3, 4, 2)
    return y.to(torch.uint8, memory_format=torch.contiguous_format)


def _warp(x, theta, size, fill=None):
    """Resample float clips (B, T, C, H, W) to `size` (h, w) through one affine map per clip, shared by its frames.

    theta (B, 2, 3) maps output to input positions in grid_sample's [-1, 1] coordinates. Positions outside the
    frame get `fill`, or the nearest edge pixel when fill is None (for crops, whose boxes lie inside the frame).
    """
    b, t, c, h, w = x.shape
    grid = F.affine_grid(theta.to(x), [b, t * c, *size], align_corners=False)
    planes = x.reshape(b, t * c, h, w)
    if fill is None:
        y = F.grid_sample(planes, grid, mode="bilinear", padding_mode="border", align_corners=False)
    else:  # grid_sample pads with zeros: shift the values so that zero stands for `fill`
        y = F.grid_sample(planes - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill
    return y.reshape(b, t, c, *size)


# ---------------------------------------------------------------------------------------------------- weak


def _crop_boxes(n, h, w, generator, area, ratio, tries=10):
    """(x0, y0, width, height) per clip in pixels, by MMAction2's RandomResizedCrop rule.

    Up to `tries` draws of an area fraction and a log-uniform aspect ratio; the first box that fits wins; a clip
    whose draws all miss gets the centred square, as the reference does.
    """
    target = h * w * _uniform((n, tries), *area, generator)
    aspect = _uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), generator).exp()
    cw, ch = (target * aspect).sqrt().round(), (target / aspect).sqrt().round()
    fits = (cw <= w) & (ch <= h)
    first = fits.int().argmax(1, keepdim=True)
    found = fits.any(1)
    side = float(min(h, w))
    cw = torch.where(found, cw.gather(1, first)[:, 0], side)
    ch = torch.where(found, ch.gather(1, first)[:, 0], side)
    # floor((room + 1) * u) is randint(0, room); u = 0.5 centres the fallback square
    ux = torch.where(found, torch.rand(n, generator=generator), 0.5)
    uy = torch.where(found, torch.rand(n, generator=generator), 0.5)
    return ((w - cw + 1) * ux).floor(), ((h - ch + 1) * uy).floor(), cw, ch


def weak(rgb, tg, size: int, generator=None, area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random resized crop to size x size and horizontal flip (p 0.5), one box and flip per clip.

    The RGB and TG clips of a clip index get the same box and flip, and so do all their frames; tg may be None for
    RGB-only methods. The paper's "resize the short side to 256" first is left out: the box is drawn as a fraction
    of the frame, so that resize would only add one more interpolation. Returns uint8 (rgb, tg), (B, T, size, size, 3).
    """
    b, _, h, w, _ = rgb.shape
    x0, y0, cw, ch = _crop_boxes(b, h, w, generator, area, ratio)
    flip = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = flip * cw / w
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = ch / h
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    out = [_packed(_warp(_planar(x), theta, (size, size))) if x is not None else None for x in (rgb, tg)]
    return out[0], out[1]


# ---------------------------------------------------------------------------------------------------- strong
# Each op maps float clips (n, T, 3, H, W) with values 0..255 to the same, given one signed level per clip in
# [-1, 1] (n,); level 0 is the identity, |level| 1 the strongest. The same parameters apply to every frame of a clip.
# Colour statistics (contrast's mean, autocontrast's range, equalize's histogram) are taken over the whole clip for
# the same reason. Geometric ops are built in pixels about the frame centre, as PIL's affine transforms.


def _affine(x, m):
    """Apply per-clip 3x3 pixel maps m (n, 3, 3), output -> input, centred coordinates."""
    h, w = x.shape[-2:]
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0]))
    theta = torch.linalg.inv(to_pixels) @ m @ to_pixels
    return _warp(x, theta[:, :2], (h, w), FILL)


def _identity_maps(level):
    return torch.eye(3).repeat(len(level), 1, 1)


def shear_x(x, level, generator=None):
    m = _identity_maps(level)
    m[:, 0, 1] = 0.3 * level  # RandAugment's largest shear factor, about 17 degrees
    return _affine(x, m)


def shear_y(x, level, generator=None):
    m = _identity_maps(level)
    m[:, 1, 0] = 0.3 * level
    return _affine(x, m)


def translate_x(x, level, generator=None):
    m = _identity_maps(level)
    m[:, 0, 2] = 0.2 * level * x.shape[-1]  # up to 20 % of the width, as the reference's Imgaug
    return _affine(x, m)


def translate_y(x, level, generator=None):
    m = _identity_maps(level)
    m[:, 1, 2] = 0.2 * level * x.shape[-2]
    return _affine(x, m)


def rotate(x, level, generator=None):
    angle = torch.deg2rad(30 * level)  # up to 30 degrees, as the reference
    m = _identity_maps(level)
    m[:, 0, 0], m[:, 0, 1] = angle.cos(), -angle.sin()
    m[:, 1, 0], m[:, 1, 1] = angle.sin(), angle.cos()
    return _affine(x, m)


def _per_clip(v, x):
    return v.to(x).reshape(-1, 1, 1, 1, 1)


def posterize(x, level, generator=None):
    step = _per_clip(2 ** (5 * level.abs() + 0.5).floor(), x)  # drops up to 5 of 8 bits: 3 kept at level 0.9
    return (x / step).floor() * step


def solarize(x, level, generator=None):
    threshold = _per_clip(256 - 128 * level.abs(), x)  # inverts pixels at or above; 256 inverts none
    return torch.where(x >= threshold, 255 - x, x)


def _luma(x):
    return (x * LUMA.to(x).reshape(1, 1, 3, 1, 1)).sum(2, keepdim=True)


def _blend(x, degenerate, level):
    """PIL's ImageEnhance: factor 1 keeps x, 0 gives `degenerate`; factors 0.1..1.9 as in RandAugment."""
    factor = _per_clip(1 + 0.9 * level, x)
    return degenerate + factor * (x - degenerate)


def color(x, level, generator=None):
    return _blend(x, _luma(x), level)


def contrast(x, level, generator=None):
    return _blend(x, _luma(x).mean(dim=(1, 2, 3, 4), keepdim=True), level)


def brightness(x, level, generator=None):
    return _blend(x, torch.zeros_like(x), level)


def sharpness(x, level, generator=None):
    """Blend with PIL's SMOOTH filter result; as in PIL the one-pixel border keeps its values."""
    n, t, c, h, w = x.shape
    # SMOOTH's kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13 is a 3x3 box sum plus 4 times the centre
    box = 9 * F.avg_pool2d(x.reshape(n * t, c, h, w), 3, stride=1).reshape(n, t, c, h - 2, w - 2)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = ((box + 4 * x[..., 1:-1, 1:-1]) / 13).round()
    return _blend(x, degenerate, level)


def autocontrast(x, level=None, generator=None):
    """Stretch each channel of each clip to 0..255 (PIL's autocontrast, cutoff 0)."""
    lo = x.amin(dim=(1, 3, 4), keepdim=True)
    hi = x.amax(dim=(1, 3, 4), keepdim=True)
    scale = 255 / (hi - lo).clamp(min=1)
    return torch.where(hi > lo, (x - lo) * scale, x)


def equalize(x, level=None, generator=None):
    """Histogram-equalise each channel of each clip with PIL's lookup table rule."""
    n, t, c, h, w = x.shape
    values = x.transpose(1, 2).reshape(n * c, -1).long()
    hist = torch.zeros(n * c, 256, dtype=x.dtype, device=x.device)
    hist.scatter_add_(1, values, torch.ones_like(values, dtype=x.dtype))
    last = 255 - (hist.flip(1) > 0).int().argmax(1, keepdim=True)  # the highest occupied bin
    step = ((hist.sum(1, keepdim=True) - hist.gather(1, last)) / 255).floor()
    before = hist.cumsum(1) - hist
    lut = ((before + (step / 2).floor()) / step.clamp(min=1)).floor().clamp(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256.0, device=x.device))  # PIL leaves such channels alone
    return lut.gather(1, values).reshape(n, c, t, h, w).transpose(1, 2)


def invert(x, level=None, generator=None):
    return 255 - x


def cutout(x, level, generator=None):
    """Fill one square per clip, side up to 20 % of the short side, centred anywhere in the frame."""
    h, w = x.shape[-2:]
    half = _per_clip(0.1 * level.abs() * min(h, w), x)
    cy = _per_clip(torch.rand(len(level), generator=generator) * h, x)
    cx = _per_clip(torch.rand(len(level), generator=generator) * w, x)
    ys = torch.arange(h, device=x.device).reshape(h, 1) + 0.5  # pixel centres
    xs = torch.arange(w, device=x.device) + 0.5
    inside = ((ys - cy).abs() < half) & ((xs - cx).abs() < half)  # (n, 1, 1, H, W)
    return torch.where(inside, FILL, x)


# The paper's list (the reference's Imgaug "default" RandAugment); autocontrast, equalize and invert take no level.
OPS = (shear_x, shear_y, translate_x, translate_y, rotate, posterize, solarize, color, contrast, brightness,
       sharpness, autocontrast, equalize, invert, cutout)


def strong(x, generator=None, n_ops=2, magnitude=0.9, ops=OPS):
    """RandAugment: per clip, n_ops ops drawn from `ops` (with replacement) at `magnitude` (0..1) with a random sign.

    Each clip gets its own ops and parameters, the same for all its frames; call it once for RGB and once for TG to
    draw them independently, as the paper does. magnitude 0.9 is the reference's level (9 of 10).
    """
    b = x.shape[0]
    chosen = torch.randint(len(ops), (b, n_ops), generator=generator)
    levels = magnitude * torch.where(torch.rand(b, n_ops, generator=generator) < 0.5, -1.0, 1.0)
    y = _planar(x)
    for slot in range(n_ops):
        for k, op in enumerate(ops):
            rows = (chosen[:, slot] == k).nonzero()[:, 0]
            if len(rows):
                on_device = rows.to(y.device)
                y[on_device] = op(y[on_device], levels[rows, slot], generator).round().clamp(0, 255)
    return _packed(y)


# ---------------------------------------------------------------------------------------------------- test time


def normalize(x):
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) with ImageNet mean and std.

    TG clips get the same mean and std as RGB: the paper normalises the stored TG image like an RGB image.
    """
    y = x.permute(0, 4, 1, 2, 3).to(torch.float32, memory_format=torch.contiguous_format)
    return y.sub_(MEAN.to(y.device).reshape(3, 1, 1, 1)).div_(STD.to(y.device).reshape(3, 1, 1, 1))


def resize_short(x, size: int):
    """Resize uint8 clips (B, T, H, W, 3) so that the short side is `size`, keeping the aspect ratio."""
    b, t, h, w, _ = x.shape
    scale = size / min(h, w)
    out = (round(h * scale), round(w * scale))
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
