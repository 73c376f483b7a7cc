"""Strong and test-time augmentation: the reference's ops and magnitudes against PIL, distinct ops, fp32, no syncs."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from torch.utils._python_dispatch import TorchDispatchMode

from tgtrain import augment
from tgtrain.augment import OPS, center_crop, normalize, resize_short, strong, three_crops

BY_NAME = {op.name: op for op in OPS}
GEOMETRIC = [BY_NAME[name] for name in ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")]


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


def _apply(op, x, level, uniforms=None):
    """One op on float clips (n, T, 3, H, W) at per-clip levels, as strong() runs it."""
    level = torch.as_tensor(level, dtype=torch.float32).reshape(-1)
    uniforms = torch.full((len(level), 2), 0.5) if uniforms is None else uniforms
    return op.apply(x, op.params(level, uniforms, *x.shape[-2:]).float()).round().clamp(0, 255)


def _one_frame(op, frame, level):
    """One op on a single (H, W, 3) uint8 frame, given back as an array to compare with PIL's."""
    return augment._packed(_apply(op, augment._planar(torch.from_numpy(frame)[None, None]), level))[0, 0].numpy()


# ---------------------------------------------------------------------------------------------------- strong


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_each_op_keeps_shape_and_frames_equal(op):
    still = _still(b=4)
    (out,) = strong(still, generator=_seeded(), n_ops=1, ops=(op,))
    assert out.shape == still.shape and out.dtype == torch.uint8
    assert _frames_equal(out)
    assert not torch.equal(out, still)


@pytest.mark.parametrize("op", GEOMETRIC, ids=lambda op: op.name)
def test_geometric_ops_are_the_identity_at_magnitude_0(op):
    clips = _clips(b=3)
    assert torch.equal(strong(clips, generator=_seeded(), n_ops=1, magnitude=0.0, ops=(op,))[0], clips)


def test_two_distinct_ops_per_clip_in_the_reference_order():
    # from a list of two ops, two distinct ops means both, every time, and in the list's order
    clips = _clips(b=16)
    x = augment._planar(clips)
    invert, brightness = BY_NAME["invert"], BY_NAME["brightness"]
    for ops, first, second in (((invert, brightness), invert, brightness), ((brightness, invert), brightness, invert)):
        (out,) = strong(clips, generator=_seeded(), n_ops=2, ops=ops)
        levels = torch.full((16,), 0.9)
        expected = augment._packed(_apply(second, _apply(first, x, levels), levels))
        assert torch.equal(out, expected)


def test_strong_draws_per_clip_independently_per_batch_and_deterministically():
    clips = _clips(b=1).expand(16, 3, 24, 32, 3)
    rgb, tg = strong(clips, clips, generator=_seeded(5))
    assert len({o.numpy().tobytes() for o in rgb}) > 8
    assert not torch.equal(rgb, tg)  # given together, RGB and TG still draw their own ops
    again = strong(clips, clips, generator=_seeded(5))
    assert torch.equal(rgb, again[0]) and torch.equal(tg, again[1])
    assert not torch.equal(rgb, strong(clips, generator=_seeded(6))[0])


FRAME = np.random.default_rng(0).integers(20, 200, (24, 32, 3), dtype=np.uint8)
FULL = np.random.default_rng(1).integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("name, level, frame, pil", [
    ("posterize", 0.9, FRAME, lambda im: ImageOps.posterize(im, 3)),  # the reference: int(4 * 0.9) bits
    ("posterize", 1.0, FRAME, lambda im: ImageOps.posterize(im, 4)),
    ("solarize", 0.9, FULL, lambda im: ImageOps.solarize(im, 230)),  # the reference: 256 * 0.9, truncated
    ("invert", 0.9, FRAME, ImageOps.invert),
    ("equalize", 0.9, FRAME, ImageOps.equalize),
])
def test_lookup_ops_match_pil_exactly_at_the_reference_magnitude(name, level, frame, pil):
    np.testing.assert_array_equal(_one_frame(BY_NAME[name], frame, level), np.asarray(pil(Image.fromarray(frame))))


@pytest.mark.parametrize("name, pil", [
    ("autocontrast", ImageOps.autocontrast),
    ("color", lambda im: ImageEnhance.Color(im).enhance(1.72)),  # the reference: 1.8 * 0.9 + 0.1, either sign
    ("contrast", lambda im: ImageEnhance.Contrast(im).enhance(1.72)),
    ("brightness", lambda im: ImageEnhance.Brightness(im).enhance(1.72)),
    ("sharpness", lambda im: ImageEnhance.Sharpness(im).enhance(1.72)),
])
@pytest.mark.parametrize("level", [0.9, -0.9])
def test_enhance_ops_match_pil_within_rounding_at_the_reference_magnitude(name, pil, level):
    # PIL truncates and works in fixed point where these ops round in float: one grey level apart at most
    ours = _one_frame(BY_NAME[name], FRAME, level).astype(int)
    theirs = np.asarray(pil(Image.fromarray(FRAME))).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_colour_statistics_are_per_frame_as_the_reference_applies_its_ops():
    frames = np.stack([FRAME, FRAME // 2 + 100])
    x = augment._planar(torch.from_numpy(frames)[None])
    for name, pil in (("equalize", ImageOps.equalize), ("autocontrast", ImageOps.autocontrast),
                      ("contrast", lambda im: ImageEnhance.Contrast(im).enhance(1.72))):
        ours = augment._packed(_apply(BY_NAME[name], x, 0.9))[0].numpy().astype(int)
        for frame, out in zip(frames, ours):
            assert np.abs(out - np.asarray(pil(Image.fromarray(frame)))).max() <= 1, name


def test_translate_shifts_whole_pixels_and_uncovers_black():
    x = augment._planar(_clips(b=2, h=10, w=40))
    out = _apply(BY_NAME["translate_x"], x, [0.5, -0.5])  # 0.2 * 0.5 * 40 = 4 pixels, one way and the other
    assert torch.allclose(out[0, ..., :-4], x[0, ..., 4:], atol=1e-3)
    assert torch.equal(out[0, ..., -4:], torch.zeros_like(out[0, ..., -4:]))
    assert torch.allclose(out[1, ..., 4:], x[1, ..., :-4], atol=1e-3)


def test_rotate_and_shear_angles():
    x = augment._planar(_clips(b=1, h=9, w=9))
    turned = _apply(BY_NAME["rotate"], x, 3.0)  # 30 degrees per unit of level: 90 degrees
    assert torch.equal(turned, x.rot90(1, dims=(3, 4))) or torch.equal(turned, x.rot90(-1, dims=(3, 4)))
    # 15.5 degrees, as scikit-image's AffineTransform under imgaug: (x, y) -> (x - sin(a) y, cos(a) y)
    coded = augment._planar(_coded(41, 41)[None, None])
    sheared = _apply(BY_NAME["shear_x"], coded, 0.9)[0, 0]
    assert torch.equal(sheared[:, 20], coded[0, 0, :, 20])  # the centre row stays
    angle = np.radians(17.19 * 0.9)
    column_shift = (sheared[0, 5, 10:31] - coded[0, 0, 0, 5, 10:31]).abs().mean() / 4  # 15 rows above the centre
    assert abs(column_shift - np.tan(angle) * 15) < 0.2
    assert abs(sheared[1, 5, 20] / 4 - (20 - 15 / np.cos(angle))) < 0.2  # from row 20 - 15 / cos(a)
    # shear_y is shear_x with the axes swapped: on the transposed frame, with red and green swapped, the same picture
    transposed = _apply(BY_NAME["shear_y"], coded.transpose(3, 4)[:, :, [1, 0, 2]], 0.9)[0, 0]
    assert torch.allclose(transposed.transpose(1, 2)[[1, 0, 2]], sheared, atol=1e-3)


def test_cutout_fills_one_square_of_the_reference_size():
    x = torch.zeros(64, 1, 3, 50, 60)
    out = _apply(BY_NAME["cutout"], x, torch.ones(64), torch.rand(64, 2, generator=_seeded()))  # 0.2 x 50 = 10
    filled = (out == 128).all(2)[:, 0]
    counts = filled.sum((1, 2))
    assert counts.max() == 100 and (counts > 0).all()
    rows, cols = filled.any(2).sum(1), filled.any(1).sum(1)
    assert torch.equal(rows * cols, counts)  # a rectangle, clipped at the border


def test_augmentation_stays_fp32_under_bf16_autocast():
    clips = _clips(b=6)
    plain = strong(clips, generator=_seeded(2), n_ops=1, ops=GEOMETRIC)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # on the CPU too, autocast runs affine_grid's matmul in bf16
        under = strong(clips, generator=_seeded(2), n_ops=1, ops=GEOMETRIC)[0]
        normalized = normalize(clips)
    assert torch.equal(plain, under)
    assert normalized.dtype == torch.float32 and torch.equal(normalized, normalize(clips))


class ScalarReads(TorchDispatchMode):
    """Counts aten._local_scalar_dense, what .item(), float(tensor) and `if tensor:` dispatch to: each one waits
    for the device."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.reads += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_strong_and_normalize_never_read_a_tensor_back():
    clips = _clips(b=8)
    with ScalarReads() as mode:
        strong(clips, clips, generator=_seeded())
        for op in OPS:
            strong(clips, generator=_seeded(), n_ops=1, ops=(op,))
        normalize(clips)
    assert mode.reads == 0
    with ScalarReads() as mode:
        float(clips.float().mean())
    assert mode.reads == 1  # the mode sees them


# ---------------------------------------------------------------------------------------------------- test time


def test_normalize_layout_and_values():
    x = torch.zeros(1, 2, 4, 5, 3, dtype=torch.uint8)
    x[0, 1, 2, 3] = torch.tensor([124, 116, 104], dtype=torch.uint8)
    y = normalize(x)
    assert y.shape == (1, 3, 2, 4, 5) and y.dtype == torch.float32 and y.is_contiguous()
    mean, std = torch.tensor(augment.MEAN), torch.tensor(augment.STD)
    assert torch.allclose(y[0, :, 1, 2, 3], (torch.tensor([124, 116, 104]) - mean) / std)
    assert torch.allclose(y[0, :, 0, 0, 0], -mean / std)


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
def test_cuda_gives_the_cpu_results_without_waiting_on_the_device():
    clips = _clips(b=8, h=40, w=56)
    on_device = clips.cuda()
    normalize(strong(on_device, on_device, generator=_seeded(1))[0])  # warm-up: constants, a pinned buffer, kernels
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        strong(on_device, on_device, generator=_seeded(1))
        normalize(on_device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for op in OPS:
        a = strong(clips, generator=_seeded(2), ops=(op,), n_ops=1)[0]
        b = strong(on_device, generator=_seeded(2), ops=(op,), n_ops=1)[0].cpu()
        assert (a.int() - b.int()).abs().float().mean() < 0.05, op.name
