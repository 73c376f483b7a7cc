"""The three training methods, each an nn.Module whose forward(labeled, unlabeled, ...) returns one step's loss.

Putting the loss inside forward lets DistributedDataParallel see every parameter a step uses. Inference is the
RGB network alone (`method.rgb`), for every method: LTG's TG network only teaches during training. Clips arrive
as the weak view already (the loader crops and flips them, tgtrain.clips); the strong view is drawn here.

FixMatch and LTG forward the strong views from the first step, also during the supervised warm-up when no loss
uses them, as the reference code does: its batch of labeled, weak and strong clips goes through each network at
once, so BN's batch statistics (and, through them, the supervised gradient) always include the strong views.
`warmup_strong = false` leaves them out until the warm-up ends (the tiny preset's, see tgtrain/config.py).
"""

import torch
import torch.nn.functional as F
from torch import nn

from tgtrain import augment, losses
from tgtrain.config import TrainConfig
from tgtrain.execution import input_format
from tgtrain.models import VideoNet


class Method(nn.Module):
    """What the three share: the config, and uint8 clips made into the networks' float input."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def normalize(self, clips):
        return augment.normalize(clips, input_format(self.config.channels_last))

    def strong_views(self, unlabeled, use_unlabeled, generator) -> list:
        """The strong view of each modality's unlabeled clips (ops drawn independently per modality), or empty
        batches during the supervised warm-up when warmup_strong is off."""
        c, clips = self.config, [unlabeled[m] for m in self.modalities]
        if not (use_unlabeled or c.warmup_strong):
            return [x[:0] for x in clips]
        return augment.strong(*clips, generator=generator, n_ops=c.strong_ops, magnitude=c.strong_magnitude)


class Supervised(Method):
    """RGB network, labeled clips only, cross-entropy."""

    modalities = ("rgb",)
    uses_unlabeled = False

    def __init__(self, config: TrainConfig, num_classes: int):
        super().__init__(config)
        self.rgb = VideoNet(num_classes, config.width, config.blocks, config.dropout, projection_dim=0)

    def forward(self, labeled, unlabeled=None, use_unlabeled=False, generator=None):
        loss = F.cross_entropy(self.rgb(self.normalize(labeled["rgb"])).logits.float(), labeled["label"])
        return loss, {"loss_sup": loss.detach()}


class FixMatch(Supervised):
    """RGB network; pseudo-labels from the weak view of unlabeled clips train the strong view."""

    uses_unlabeled = True

    def forward(self, labeled, unlabeled=None, use_unlabeled=False, generator=None):
        c, b = self.config, len(labeled["label"])
        strong = self.strong_views(unlabeled, use_unlabeled, generator)
        logits = self.rgb(self.normalize(torch.cat([labeled["rgb"], unlabeled["rgb"], *strong]))).logits.float()
        sup = F.cross_entropy(logits[:b], labeled["label"])
        stats = {"loss_sup": sup.detach()}
        if not use_unlabeled:
            return sup, stats
        labels, mask = losses.pseudo_labels(logits[b:2 * b], threshold=c.fixmatch_threshold)
        unsup = losses.unlabeled_loss(logits[2 * b:], labels, mask)
        stats.update(loss_unsup=unsup.detach(), **pseudo_label_stats(labels, mask, unlabeled))
        return sup + unsup, stats


class LTG(Method):
    """Learning from Temporal Gradient: an RGB and a TG network that teach each other.

    Per step: supervised CE on labeled clips (both modalities); pseudo-labels from the averaged weak-view logits
    of both train the strong views of both; dense alignment of RGB features to the (detached) TG features at all
    four stages; cross-modal InfoNCE over the global batch. The unlabeled CE waits for the supervised warm-up
    (the strong views are forwarded all the same, see above).
    """

    modalities = ("rgb", "tg")
    uses_unlabeled = True

    def __init__(self, config: TrainConfig, num_classes: int):
        super().__init__(config)
        self.rgb = VideoNet(num_classes, config.width, config.blocks, config.dropout, config.proj_dim)
        self.tg = VideoNet(num_classes, config.width, config.blocks, config.dropout, config.proj_dim)

    def forward(self, labeled, unlabeled=None, use_unlabeled=False, generator=None):
        c, b = self.config, len(labeled["label"])
        rgb_s, tg_s = self.strong_views(unlabeled, use_unlabeled, generator)
        rgb = self.rgb(self.normalize(torch.cat([labeled["rgb"], unlabeled["rgb"], rgb_s])))
        tg = self.tg(self.normalize(torch.cat([labeled["tg"], unlabeled["tg"], tg_s])))

        sup = F.cross_entropy(rgb.logits[:b].float(), labeled["label"]) + F.cross_entropy(tg.logits[:b].float(), labeled["label"])
        weak_rows = slice(0, 2 * b)  # labeled + weak unlabeled: the clips both networks see alike
        align = losses.alignment([f[weak_rows] for f in rgb.features], [f[weak_rows] for f in tg.features])
        contrast = losses.info_nce(losses.gather_with_grad(rgb.z[weak_rows]), losses.gather_with_grad(tg.z[weak_rows]),
                                   c.temperature)
        loss = c.weight_sup * sup + c.weight_align * align + c.weight_contrast * contrast
        stats = {"loss_sup": sup.detach(), "loss_align": align.detach(), "loss_contrast": contrast.detach()}
        if use_unlabeled:
            labels, mask = losses.pseudo_labels(rgb.logits[b:2 * b], tg.logits[b:2 * b], threshold=c.threshold,
                                                weights=(c.pseudo_rgb_share, 1 - c.pseudo_rgb_share))
            unsup = losses.unlabeled_loss(rgb.logits[2 * b:], labels, mask) + losses.unlabeled_loss(tg.logits[2 * b:], labels, mask)
            loss = loss + c.weight_unsup * unsup
            stats.update(loss_unsup=unsup.detach(), **pseudo_label_stats(labels, mask, unlabeled))
        return loss, stats


def pseudo_label_stats(labels, mask, unlabeled) -> dict:
    """How many pseudo-labels were kept, and how many of those are right (the hidden true labels, never a loss)."""
    kept = mask.float().sum()
    right = ((labels == unlabeled["true_label"]) & mask).float().sum()
    return {"mask_rate": kept / len(mask), "pseudo_acc": right / kept.clamp(min=1)}


def build_method(config: TrainConfig, num_classes: int) -> nn.Module:
    return {"supervised": Supervised, "fixmatch": FixMatch, "ltg": LTG}[config.method](config, num_classes)
