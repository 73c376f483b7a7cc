"""Weak, strong and test-time augmentation: shapes, shared parameters, identities, and PIL's results for each op."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from tgtrain import augment
from tgtrain.augment import (OPS, center_crop, normalize, resize_short, strong, three_crops, translate_x, weak)

LEVELLED = [op for op in OPS if op not in (augment.autocontrast, augment.equalize, augment.invert)]


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def _clips(b=2, t=3, h=24, w=32, seed=0):
    return torch.randint(0, 256, (b, t, h, w, 3), dtype=torch.uint8, generator=_seeded(seed))


def _still(b=2, t=3, h=24, w=32):
    """Clips whose frames are all the same picture."""
    return _clips(b, 1, h, w).expand(b, t, h, w, 3).contiguous()


def _coded(h, w):
    """One frame whose red channel is 4 * column and green channel 4 * row, to read positions back."""
    frame = torch.zeros(h, w, 3, dtype=torch.uint8)
    frame[..., 0] = (4 * torch.arange(w)).reshape(1, w)
    frame[..., 1] = (4 * torch.arange(h)).reshape(h, 1)
    return frame


def _frames_equal(x):
    return bool((x == x[:, :1]).all())


# ---------------------------------------------------------------------------------------------------- weak


def test_weak_shapes_and_shared_box_for_rgb_tg_and_frames():
    rgb = _clips(b=6)
    out_rgb, out_tg = weak(rgb, rgb.clone(), 16, _seeded())
    assert out_rgb.shape == (6, 3, 16, 16, 3) and out_rgb.dtype == torch.uint8
    assert torch.equal(out_rgb, out_tg)
    still_rgb, still_tg = weak(_still(b=6), _still(b=6), 16, _seeded())
    assert _frames_equal(still_rgb) and _frames_equal(still_tg)
    only_rgb, none = weak(rgb, None, 16, _seeded())
    assert none is None and torch.equal(only_rgb, out_rgb)


def test_weak_crops_are_exact_pixel_boxes_and_flips():
    # a 64 x 64 frame, boxes of area 1/4 and aspect 1 resized to 32: scale 1, so each output is the frame's pixels
    frame = _coded(64, 64)
    clips = frame.expand(32, 1, 64, 64, 3)
    out, _ = weak(clips, None, 32, _seeded(), area=(0.25, 0.25), ratio=(1.0, 1.0))
    flips, origins = [], set()
    for clip in out[:, 0]:
        cols, rows = clip[0, :, 0].long() // 4, clip[:, 0, 1].long() // 4
        assert torch.equal(rows, rows[0] + torch.arange(32))
        step = int(cols[1] - cols[0])
        assert step in (1, -1) and torch.equal(cols, cols[0] + step * torch.arange(32))
        flips.append(step)
        origins.add((int(rows[0]), int(cols.min())))
    assert set(flips) == {1, -1}  # both flips happen over 32 clips
    assert len(origins) > 20  # and the boxes differ from clip to clip


def test_weak_full_frame_box_is_the_identity_or_the_mirror():
    clips = _clips(b=8, h=20, w=20)
    out, _ = weak(clips, None, 20, _seeded(), area=(1.0, 1.0), ratio=(1.0, 1.0))
    for x, y in zip(clips, out):
        assert torch.equal(y, x) or torch.equal(y, x.flip(2))


def test_weak_is_deterministic_with_a_seed():
    clips = _clips(b=4)
    assert torch.equal(weak(clips, None, 16, _seeded(3))[0], weak(clips, None, 16, _seeded(3))[0])
    assert not torch.equal(weak(clips, None, 16, _seeded(3))[0], weak(clips, None, 16, _seeded(4))[0])


# ---------------------------------------------------------------------------------------------------- strong


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.__name__)
def test_each_op_keeps_shape_and_frames_equal(op):
    still = _still(b=4)
    out = strong(still, _seeded(), n_ops=1, ops=(op,))
    assert out.shape == still.shape and out.dtype == torch.uint8
    assert _frames_equal(out)
    assert not torch.equal(out, still)


@pytest.mark.parametrize("op", LEVELLED, ids=lambda op: op.__name__)
def test_levelled_ops_are_the_identity_at_magnitude_0(op):
    clips = _clips(b=3)
    assert torch.equal(strong(clips, _seeded(), n_ops=1, magnitude=0.0, ops=(op,)), clips)


def test_strong_draws_per_clip_and_is_deterministic():
    clips = _clips(b=1).expand(16, 3, 24, 32, 3)
    out = strong(clips, _seeded(5))
    assert len({o.numpy().tobytes() for o in out}) > 8
    assert torch.equal(out, strong(clips, _seeded(5)))
    assert not torch.equal(out, strong(clips, _seeded(6)))


def _one_frame(op, frame, level):
    """Run one op on a single (H, W, 3) uint8 frame as strong() does, and give back a PIL-comparable array."""
    x = augment._planar(torch.from_numpy(frame)[None, None])
    return augment._packed(op(x, torch.tensor([level]), None).round().clamp(0, 255))[0, 0].numpy()


FRAME = np.random.default_rng(0).integers(20, 200, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("op, level, pil", [
    (augment.posterize, 0.9, lambda im: ImageOps.posterize(im, 3)),
    (augment.posterize, 0.3, lambda im: ImageOps.posterize(im, 6)),
    (augment.solarize, 0.5, lambda im: ImageOps.solarize(im, 192)),
    (augment.invert, 1.0, ImageOps.invert),
    (augment.equalize, 1.0, ImageOps.equalize),
], ids=["posterize3", "posterize6", "solarize", "invert", "equalize"])
def test_lookup_ops_match_pil_exactly(op, level, pil):
    np.testing.assert_array_equal(_one_frame(op, FRAME, level), np.asarray(pil(Image.fromarray(FRAME))))


@pytest.mark.parametrize("op, level, pil", [
    (augment.autocontrast, 1.0, ImageOps.autocontrast),
    (augment.color, 0.5, lambda im: ImageEnhance.Color(im).enhance(1.45)),
    (augment.color, -1.0, lambda im: ImageEnhance.Color(im).enhance(0.1)),
    (augment.contrast, 0.5, lambda im: ImageEnhance.Contrast(im).enhance(1.45)),
    (augment.brightness, -0.5, lambda im: ImageEnhance.Brightness(im).enhance(0.55)),
    (augment.sharpness, 1.0, lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
], ids=["autocontrast", "color+", "color-", "contrast", "brightness", "sharpness"])
def test_enhance_ops_match_pil_within_rounding(op, level, pil):
    # PIL truncates and works in fixed point where these ops round in float: one grey level apart at most
    ours = _one_frame(op, FRAME, level).astype(int)
    theirs = np.asarray(pil(Image.fromarray(FRAME))).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_translate_shifts_whole_pixels_and_fills_grey():
    x = augment._planar(_clips(b=2, h=10, w=40))
    out = translate_x(x, torch.tensor([0.5, -0.5]))  # 0.2 * 0.5 * 40 = 4 pixels, one way and the other
    assert torch.allclose(out[0, ..., :-4], x[0, ..., 4:], atol=1e-3)
    assert torch.allclose(out[0, ..., -4:], torch.tensor(128.0), atol=1e-3)
    assert torch.allclose(out[1, ..., 4:], x[1, ..., :-4], atol=1e-3)


def test_rotate_by_90_degrees_is_rot90_and_shear_keeps_the_centre_row():
    x = augment._planar(_clips(b=1, h=9, w=9))
    turned = augment.rotate(x, torch.tensor([3.0])).round()  # level 3 is 90 degrees
    assert torch.equal(turned, x.rot90(1, dims=(3, 4))) or torch.equal(turned, x.rot90(-1, dims=(3, 4)))
    sheared = augment.shear_x(x, torch.tensor([1.0])).round()
    assert torch.equal(sheared[..., 4, :], x[..., 4, :])
    assert not torch.equal(sheared, x)


def test_cutout_fills_one_square():
    x = torch.zeros(64, 1, 3, 50, 50)
    out = augment.cutout(x, torch.ones(64), _seeded())  # side 10 pixels
    filled = (out == 128).all(2)[:, 0]
    counts = filled.sum((1, 2))
    assert counts.max() == 100 and (counts > 0).all()
    rows, cols = filled.any(2).sum(1), filled.any(1).sum(1)
    assert torch.equal(rows * cols, counts)  # a rectangle, clipped at the border


# ---------------------------------------------------------------------------------------------------- test time


def test_normalize_layout_and_values():
    x = torch.zeros(1, 2, 4, 5, 3, dtype=torch.uint8)
    x[0, 1, 2, 3] = torch.tensor([124, 116, 104], dtype=torch.uint8)
    y = normalize(x)
    assert y.shape == (1, 3, 2, 4, 5) and y.dtype == torch.float32 and y.is_contiguous()
    expected = (torch.tensor([124, 116, 104]) - augment.MEAN) / augment.STD
    assert torch.allclose(y[0, :, 1, 2, 3], expected)
    assert torch.allclose(y[0, :, 0, 0, 0], -augment.MEAN / augment.STD)


def test_resize_short_keeps_aspect_and_constant_clips():
    x = torch.full((2, 3, 30, 40, 3), 77, dtype=torch.uint8)
    y = resize_short(x, 15)
    assert y.shape == (2, 3, 15, 20, 3) and (y == 77).all()
    assert resize_short(x.transpose(2, 3), 15).shape == (2, 3, 20, 15, 3)


def test_three_crops_and_centre_crop_positions():
    frame = _coded(20, 36)[None, None]
    left, centre, right = three_crops(frame, 20)
    assert [int(c[0, 0, 0, 0, 0]) // 4 for c in (left, centre, right)] == [0, 8, 16]
    assert all(c.shape == (1, 1, 20, 20, 3) for c in (left, centre, right))
    top, _, bottom = three_crops(frame.transpose(2, 3), 20)
    assert int(top[0, 0, 0, 0, 0]) // 4 == 0 and int(bottom[0, 0, 0, 0, 0]) // 4 == 16
    middle = center_crop(frame, 10)
    assert (int(middle[0, 0, 0, 0, 1]) // 4, int(middle[0, 0, 0, 0, 0]) // 4) == (5, 13)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_results():
    clips = _clips(b=8, h=40, w=56)
    cpu = weak(clips, clips, 32, _seeded(1))[0]
    cuda = weak(clips.cuda(), clips.cuda(), 32, _seeded(1))[0].cpu()
    assert (cpu.int() - cuda.int()).abs().max() <= 1
    for op in OPS:
        a = strong(clips, _seeded(2), ops=(op,), n_ops=1)
        b = strong(clips.cuda(), _seeded(2), ops=(op,), n_ops=1).cpu()
        assert (a.int() - b.int()).abs().float().mean() < 0.05, op.__name__
