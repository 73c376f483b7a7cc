"""The networks: R3D-18 family 3D ResNets with per-stage features, the classifier head and the projection head."""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # the reference config's batch-norm epsilon


def _conv_bn(c_in, c_out, kernel, stride=1, padding=0):
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, stride, padding, bias=False), nn.BatchNorm3d(c_out, eps=BN_EPS))


class BasicBlock3d(nn.Module):
    """Two 3x3x3 convolutions with a residual connection; the first carries the stride, in t, h and w alike."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv_bn(c_in, c_out, 3, stride, 1)
        self.conv2 = _conv_bn(c_out, c_out, 3, 1, 1)
        self.shortcut = _conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class R3D(nn.Module):
    """A 3D ResNet trained from scratch; width=64, blocks=(2, 2, 2, 2) is the paper's R3D-18.

    Stem: conv 3x7x7 with stride (1, 2, 2), BN, ReLU, max-pool 1x3x3 with stride (1, 2, 2): no temporal stride, as
    the paper says. Stages of widths width * (1, 2, 4, 8) with strides (1, 2, 2, 2) applied to t as well as h and w,
    and a temporal max-pool (2x1x1, stride 2) after stage 1: that is what the reference code runs (MMAction2's
    ResNet3d with temporal_strides=(1, 2, 2, 2) and its default pool2), and the paper's numbers come from it.
    An 8 x 224 x 224 clip gives stage outputs of 4 x 56 x 56, 2 x 28 x 28, 1 x 14 x 14 and 1 x 7 x 7; clips need at
    least 2 frames.
    """

    def __init__(self, width: int = 64, blocks=(2, 2, 2, 2), in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            _conv_bn(in_channels, width, (3, 7, 7), (1, 2, 2), (1, 3, 3)),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        self.temporal_pool = nn.MaxPool3d((2, 1, 1), (2, 1, 1))
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            first = BasicBlock3d(c_in, c_out, 1 if i == 0 else 2)
            stages.append(nn.Sequential(first, *[BasicBlock3d(c_out, c_out) for _ in range(n - 1)]))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.out_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv3d):  # the reference's kaiming_init; BN keeps PyTorch's weight 1, bias 0
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        """x (B, C, T, H, W) -> (the four stage outputs (B, C_i, T_i, H_i, W_i), the global average (B, out_dim))."""
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 0:
                x = self.temporal_pool(x)
            features.append(x)
        return features, x.mean(dim=(2, 3, 4))


class Head(nn.Module):
    """Dropout then a linear classifier on the pooled feature (the reference's I3DHead: dropout 0.5, std 0.01)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, pooled):
        return self.fc(self.dropout(pooled))


class Projection(nn.Sequential):
    """The contrastive MLP: three linear layers `dim` wide, BN + ReLU between, and a final BN without affine
    parameters (the reference's ContrastHead, fc_layer_num=3, with_final_normalize); info_nce L2-normalises."""

    def __init__(self, in_dim: int, dim: int = 512):
        super().__init__(
            nn.Linear(in_dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Linear(dim, dim, bias=False), nn.BatchNorm1d(dim, affine=False),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)


class Output(NamedTuple):
    features: list[torch.Tensor]  # the four stage outputs, for the alignment loss
    pooled: torch.Tensor          # (B, out_dim) global average of the last stage, for analysis
    logits: torch.Tensor          # (B, num_classes)
    z: torch.Tensor | None        # (B, projection_dim) before normalisation; None without a projection head


class VideoNet(nn.Module):
    """One modality's network, backbone and heads in one module so that one DDP wrapper and one state dict hold it.

    projection_dim=0 leaves the projection head out (supervised and FixMatch need none). The projection runs on
    every clip of the batch; a method that contrasts only some clips takes those rows of z.
    """

    def __init__(self, num_classes: int, width: int = 64, blocks=(2, 2, 2, 2), dropout: float = 0.5,
                 projection_dim: int = 512, in_channels: int = 3):
        super().__init__()
        self.backbone = R3D(width, blocks, in_channels)
        self.head = Head(self.backbone.out_dim, num_classes, dropout)
        self.projection = Projection(self.backbone.out_dim, projection_dim) if projection_dim else None

    def forward(self, x) -> Output:
        features, pooled = self.backbone(x)
        z = self.projection(pooled) if self.projection is not None else None
        return Output(features, pooled, self.head(pooled), z)
