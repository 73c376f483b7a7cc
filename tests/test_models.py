"""The R3D family: the paper's shapes and size, the heads, and a tiny network that learns."""

import pytest
import torch
import torch.nn.functional as F

from tgtrain.models import R3D, Head, Projection, VideoNet

TINY = dict(width=8, blocks=(1, 1, 1, 1))


def test_r3d18_has_torchvisions_r3d_18_size():
    # torchvision's r3d_18, the same network with a 400-way classifier, has 33,371,472 parameters;
    # its classifier holds 512 * 400 + 400 = 205,200 of them
    assert sum(p.numel() for p in R3D().parameters()) == 33_371_472 - 205_200


def test_r3d18_shapes_for_an_8_frame_224_clip():
    with torch.device("meta"):  # shapes only: no memory, no arithmetic
        net = R3D()
        x = torch.empty(2, 3, 8, 224, 224)
        assert net.stem(x).shape == (2, 64, 8, 56, 56)  # no temporal stride in the stem conv or pool
        features, pooled = net(x)
    assert [tuple(f.shape) for f in features] == [
        (2, 64, 4, 56, 56), (2, 128, 2, 28, 28), (2, 256, 1, 14, 14), (2, 512, 1, 7, 7)]
    assert pooled.shape == (2, 512)


def test_width_and_depth_knobs():
    net = R3D(width=16, blocks=(1, 2, 1, 3))
    assert [len(stage) for stage in net.stages] == [1, 2, 1, 3]
    assert net.out_dim == 128
    features, pooled = net(torch.randn(2, 3, 4, 32, 32))
    assert [f.shape[1] for f in features] == [16, 32, 64, 128]
    assert torch.allclose(pooled, features[-1].mean(dim=(2, 3, 4)))


def test_videonet_outputs_and_no_projection():
    net = VideoNet(num_classes=5, projection_dim=32, **TINY)
    out = net(torch.randn(3, 3, 4, 32, 32))
    assert out.logits.shape == (3, 5) and out.z.shape == (3, 32) and out.pooled.shape == (3, 64)
    assert len(out.features) == 4
    bare = VideoNet(num_classes=5, projection_dim=0, **TINY)
    assert bare(torch.randn(2, 3, 4, 32, 32)).z is None
    assert not any(name.startswith("projection") for name, _ in bare.named_parameters())


def test_head_drops_out_in_training_only():
    head = Head(64, 7)
    pooled = torch.randn(4, 64)
    head.eval()
    assert torch.equal(head(pooled), head.fc(pooled))
    head.train()
    torch.manual_seed(0)
    assert not torch.allclose(head(pooled), head.fc(pooled))


def test_projection_ends_in_a_batch_norm_without_affine():
    proj = Projection(64, dim=32)
    assert sum(p.numel() for p in proj.parameters()) == 64 * 32 + 2 * 32 + 32 * 32 + 2 * 32 + 32 * 32
    z = proj(torch.randn(16, 64) * 5 + 3)
    assert z.mean(0).abs().max() < 1e-4
    # var / (var + eps) of the last layer's small initial outputs: just under 1
    assert z.var(0, unbiased=False).sub(1).abs().max() < 0.1
    assert not proj[-1].affine


def test_tiny_net_fits_a_small_batch():
    # two classes: a bright square drifting right or left over 4 frames; 8 clips
    torch.manual_seed(0)
    x = torch.zeros(8, 3, 4, 32, 32)
    for i in range(8):
        for t in range(4):
            left = 8 + (2 * t if i % 2 else -2 * t) + i
            x[i, :, t, 10:20, left:left + 8] = 1.0
    y = torch.arange(8) % 2
    net = VideoNet(num_classes=2, projection_dim=0, dropout=0.0, **TINY)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(net(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize("frames", [2, 8])
def test_gradient_reaches_the_stem(frames):
    net = VideoNet(num_classes=3, projection_dim=16, **TINY)
    out = net(torch.randn(2, 3, frames, 32, 32))
    (out.logits.sum() + out.z.sum() + sum(f.mean() for f in out.features)).backward()
    assert net.backbone.stem[0][0].weight.grad.abs().sum() > 0
