"""The semi-supervised losses of FixMatch and LTG as pure functions of tensors; supervised CE is F.cross_entropy."""

import torch
import torch.distributed as dist
import torch.nn.functional as F


@torch.no_grad()
def pseudo_labels(*logits, threshold: float = 0.3, weights=None):
    """(labels, mask) from the weak-view logits of one modality (FixMatch) or several (LTG: RGB and TG).

    The logits are averaged, then softmaxed, as the reference code does ("avg" pseudo_label_metric); a clip is
    kept when its top probability is at least `threshold` (the reference compares with >=). `weights`, one per
    modality and summing to 1, weigh the average; the default, equal weights, is the reference's plain mean (and
    bit for bit the same: halving a float is exact).
    """
    weights = weights or [1 / len(logits)] * len(logits)
    probs = sum(w * x.float() for w, x in zip(weights, logits, strict=True)).softmax(-1)
    confidence, labels = probs.max(-1)
    return labels, confidence >= threshold


def unlabeled_loss(logits, labels, mask):
    """Cross-entropy of the strong-view logits against the pseudo-labels, over kept clips, divided by the whole
    unlabeled batch: the mean over kept clips scaled by kept / batch, as the reference, and 0 when none is kept."""
    return (F.cross_entropy(logits.float(), labels, reduction="none") * mask).mean()


def alignment(features_rgb, features_tg):
    """Sum over stages of the mean over (B, t, h, w) of 1 - cosine similarity over channels.

    The TG side is detached: the TG network teaches, the RGB network learns (without the stop-gradient the paper
    reports 60.0 instead of 74.6 top-1).
    """
    return sum((1 - F.cosine_similarity(r.float(), t.detach().float(), dim=1)).mean()
               for r, t in zip(features_rgb, features_tg, strict=True))


def info_nce(z_rgb, z_tg, temperature: float = 0.5):
    """Cross-modal InfoNCE on L2-normalised projections (N, D) of the same N clips, row i of each the same clip.

    The positive of a clip is its other modality; every other clip of the batch is a negative. Pass the global
    batch (gather_with_grad) so that the negatives come from all ranks. The two directions, RGB -> TG and
    TG -> RGB, are summed, as the reference's SimCLRLoss_PTV_New does, so that the paper's weight 0.5 keeps its
    meaning. The similarities are computed in fp32 even under bf16 autocast: at a temperature of 0.5, bf16's 8-bit
    mantissa would blur cosines that differ in the third decimal.
    """
    a = F.normalize(z_rgb.float(), dim=1)
    b = F.normalize(z_tg.float(), dim=1)
    with torch.autocast(a.device.type, enabled=False):
        logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def gather_with_grad(z):
    """All ranks' z concatenated in rank order, with gradients flowing back to each rank's own rows.

    The identity without torch.distributed. The backward sums each rank's gradient for a rank's rows over all ranks,
    so that when every rank computes the loss of the whole global batch, DDP's averaging of parameter gradients
    gives exactly the gradient of that global loss. Every rank must pass the same number of rows.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return z
    return _GatherWithGrad.apply(z)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: the sum over ranks of the gradient, then this rank's rows. (Written out rather
    than torch.distributed.nn's all_gather: deprecated in torch 2.13, and gloo ranks using it aborted at exit.)"""

    @staticmethod
    def forward(ctx, z):
        parts = [torch.empty_like(z) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, z.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)
        rows = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * rows:(dist.get_rank() + 1) * rows]
