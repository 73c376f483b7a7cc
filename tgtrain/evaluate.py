"""RGB-only evaluation: clip scores averaged per video (multi-clip, multi-crop), top-1 / top-5, per class, HDF5."""

from pathlib import Path

import h5py
import numpy as np
import torch
import torch.distributed as dist

from tgtrain import augment


@torch.no_grad()
def video_scores(net, loader, device, autocast, crop: int | None = None, modality: str = "rgb"):
    """Yield (keys, labels, scores, features) per batch: softmax scores and pooled features averaged over each
    video's views. Views arrive as uint8 (B, V, T, S, S, 3); crop takes their centre crop first (validation)."""
    net.eval()
    for batch in loader:
        clips = batch[modality]
        b, v = clips.shape[:2]
        x = clips.flatten(0, 1).to(device, non_blocking=True)
        if crop is not None and crop < x.shape[2]:
            x = augment.center_crop(x, crop)
        with autocast:
            out = net(augment.normalize(x))
        scores = out.logits.float().softmax(-1).view(b, v, -1).mean(1)
        features = out.pooled.float().view(b, v, -1).mean(1)
        yield batch["key"], batch["label"].to(device), scores, features


def evaluate(net, loader, device, autocast, crop: int | None = None, modality: str = "rgb") -> dict:
    """Top-1 and top-5 (%) and per-class accuracy over every video, summed over all ranks."""
    num_classes = net.head.fc.out_features
    right1 = torch.zeros(num_classes, device=device)
    right5 = torch.zeros(num_classes, device=device)
    seen = torch.zeros(num_classes, device=device)
    for _keys, labels, scores, _features in video_scores(net, loader, device, autocast, crop, modality):
        top5 = scores.topk(min(5, num_classes), dim=1).indices
        seen.index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
        right1.index_add_(0, labels, (top5[:, 0] == labels).float())
        right5.index_add_(0, labels, (top5 == labels[:, None]).any(1).float())
    if dist.is_available() and dist.is_initialized():
        for tensor in (right1, right5, seen):
            dist.all_reduce(tensor)
    total = seen.sum().clamp(min=1)
    return {"top1": 100 * float(right1.sum() / total), "top5": 100 * float(right5.sum() / total),
            "videos": int(seen.sum()), "per_class": (100 * right1 / seen.clamp(min=1)).tolist(),
            "per_class_videos": seen.long().tolist()}


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
    """top-1 / top-5 beside chance, then the per-class table, worst classes first."""
    lines = [f"top-1 {found['top1']:.1f} %   top-5 {found['top5']:.1f} %   chance {100 / len(classes):.1f} %   "
             f"({found['videos']} videos)", f"{'class':<28} {'videos':>6} {'top-1 %':>8}"]
    rows = sorted(zip(classes, found["per_class_videos"], found["per_class"]), key=lambda r: r[2])
    lines += [f"{name[:28]:<28} {n:>6} {acc:>8.1f}" for name, n, acc in rows if n]
    return "\n".join(lines)
