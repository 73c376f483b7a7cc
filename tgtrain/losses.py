"""The semi-supervised losses of FixMatch and LTG as pure functions of tensors; supervised CE is F.cross_entropy."""

import torch
import torch.distributed as dist
import torch.nn.functional as F


@torch.no_grad()
def pseudo_labels(*logits, threshold: float = 0.3):
    """(labels, mask) from the weak-view logits of one modality (FixMatch) or several (LTG: RGB and TG).

    The logits are averaged, then softmaxed, as the reference code does ("avg" pseudo_label_metric); a clip is
    kept when its top probability is at least `threshold` (the reference compares with >=).
    """
    probs = torch.stack(logits).float().mean(0).softmax(-1)
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
    meaning.
    """
    a = F.normalize(z_rgb.float(), dim=1)
    b = F.normalize(z_tg.float(), dim=1)
    logits = a @ b.T / temperature
    target = torch.arange(len(a), device=a.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def gather_with_grad(z):
    """All ranks' z concatenated in rank order, with gradients flowing back to each rank's own rows.

    The identity without torch.distributed. The backward sums each rank's gradient for a rank's rows over all ranks,
    so that when every rank computes the loss of the whole global batch, DDP's averaging of parameter gradients
    gives exactly the gradient of that global loss.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return z
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(z), dim=0)
