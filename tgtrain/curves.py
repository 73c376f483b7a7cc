"""curves.png: training loss and val top-1 per epoch, drawn with Pillow (no plotting library needed)."""

import json
from pathlib import Path

from PIL import Image, ImageDraw

W, H, PAD = 360, 240, 36


def plot_curves(metrics: Path, out: Path) -> None:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    panels = [("loss", [(r["epoch"], r["loss"]) for r in records if "loss" in r]),
              ("val top-1 %", [(r["epoch"], r["val_top1"]) for r in records if "val_top1" in r])]
    image = Image.new("RGB", (W * len(panels), H), "white")
    for i, (title, points) in enumerate(panels):
        draw_panel(ImageDraw.Draw(image), i * W, title, points)
    image.save(out)


def draw_panel(draw: ImageDraw.ImageDraw, left: int, title: str, points: list) -> None:
    x0, y0, x1, y1 = left + PAD, PAD // 2 + 12, left + W - PAD // 2, H - PAD
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text((x0, 4), title, fill="black")
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1
    first, last = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    pixels = [(x0 + (x - first) / (last - first) * (x1 - x0), y1 - (y - lo) / (hi - lo) * (y1 - y0)) for x, y in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=(31, 119, 180), width=2)
    for px, py in pixels:
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=(31, 119, 180))
    draw.text((left + 2, y0), f"{hi:.3g}", fill="black")
    draw.text((left + 2, y1 - 10), f"{lo:.3g}", fill="black")
    draw.text((x0, y1 + 4), f"epoch {first}", fill="black")
    draw.text((x1 - 50, y1 + 4), f"{max(xs)}", fill="black")
