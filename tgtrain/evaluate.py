"""RGB-only evaluation: clip scores averaged per video (multi-clip, multi-crop), top-1 / top-5 / mean class accuracy,
per class and confused with which, HDF5."""

from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist

from tgtrain import augment


@torch.no_grad()
def view_scores(net, clips, device, autocast, crop: int | None = None):
    """Softmax scores and pooled features of uint8 views (B, V, T, S, S, 3), each averaged over its video's V
    views; crop takes their centre crop first (validation, test_views "center"). The network must be in eval mode."""
    b, v = clips.shape[:2]
    x = clips.flatten(0, 1).to(device, non_blocking=True)
    if crop is not None and crop < x.shape[2]:
        x = augment.center_crop(x, crop)
    with autocast:
        out = net(augment.normalize(x))
    return out.logits.float().softmax(-1).view(b, v, -1).mean(1), out.pooled.float().view(b, v, -1).mean(1)


def video_scores(net, loader, device, autocast, crop: int | None = None, modality: str = "rgb"):
    """Yield (keys, labels, scores, features) per batch of a loader of views (see view_scores)."""
    net.eval()
    for batch in loader:
        scores, features = view_scores(net, batch[modality], device, autocast, crop)
        yield batch["key"], batch["label"].to(device), scores, features


def evaluate(net, loader, device, autocast, crop: int | None = None, modality: str = "rgb") -> dict:
    """Top-1, top-5, mean class accuracy (%), per-class accuracy and the confusion matrix over every video,
    summed over all ranks. Mean class accuracy is MMAction2's: the mean of the per-class top-1 over the classes
    that have val videos, so that each class counts alike however many videos it has."""
    num_classes = net.head.fc.out_features
    right5 = torch.zeros(num_classes, device=device)
    confusion = torch.zeros(num_classes, num_classes, device=device)  # [true, predicted] video counts
    for _keys, labels, scores, _features in video_scores(net, loader, device, autocast, crop, modality):
        top5 = scores.topk(min(5, num_classes), dim=1).indices
        confusion.index_put_((labels, top5[:, 0]), torch.ones_like(labels, dtype=torch.float), accumulate=True)
        right5.index_add_(0, labels, (top5 == labels[:, None]).any(1).float())
    if dist.is_available() and dist.is_initialized():
        for tensor in (right5, confusion):
            dist.all_reduce(tensor)
    seen, right1 = confusion.sum(1), confusion.diagonal()
    total, per_class = seen.sum().clamp(min=1), right1 / seen.clamp(min=1)
    return {"top1": 100 * float(right1.sum() / total), "top5": 100 * float(right5.sum() / total),
            "mean_class": 100 * float(per_class[seen > 0].mean()) if seen.any() else 0.0,
            "videos": int(seen.sum()), "per_class": (100 * per_class).tolist(),
            "per_class_videos": seen.long().tolist(),
            "confusion": confusion.long().cpu().numpy()}


def write_predictions(net, loader, device, autocast, path: Path, classes: list[str], crop: int | None = None) -> int:
    """Per-video scores (N, C), pooled features (N, D), labels and keys in an HDF5 file; returns N."""
    keys, labels, scores, features = [], [], [], []
    for k, y, s, f in video_scores(net, loader, device, autocast, crop):
        keys += list(k)
        labels.append(y.cpu())
        scores.append(s.cpu())
        features.append(f.cpu())
    with h5py.File(path, "w") as h5:
        h5["keys"] = np.array(keys, dtype=h5py.string_dtype())
        h5["labels"] = torch.cat(labels).numpy()
        h5["scores"] = torch.cat(scores).numpy()
        h5["features"] = torch.cat(features).numpy()
        h5.attrs["classes"] = np.array(classes, dtype=h5py.string_dtype())
    return len(keys)


def format_report(found: dict, classes: list[str]) -> str:
    """top-1 / top-5 / mean class accuracy beside chance, then the per-class table, worst classes first, with the
    class each one is most often mistaken for (the largest cell off the confusion matrix's diagonal)."""
    lines = [f"top-1 {found['top1']:.1f} %   top-5 {found['top5']:.1f} %   mean class accuracy "
             f"{found['mean_class']:.1f} %   chance {100 / len(classes):.1f} %   ({found['videos']} videos)",
             f"{'class':<28} {'videos':>6} {'top-1 %':>8}   mistaken most for"]
    wrong = found["confusion"] * (1 - np.eye(len(classes), dtype=np.int64))
    for i in sorted(range(len(classes)), key=lambda i: found["per_class"][i]):
        n = found["per_class_videos"][i]
        if not n:
            continue
        j = int(wrong[i].argmax())
        mistaken = f"{classes[j][:28]} ({100 * wrong[i, j] / n:.0f} %)" if wrong[i, j] else "-"
        lines.append(f"{classes[i][:28]:<28} {n:>6} {found['per_class'][i]:>8.1f}   {mistaken}")
    return "\n".join(lines)
