"""curves.png: training loss, val top-1 and the pseudo-labels per epoch, drawn with Pillow (no plotting library)."""

import json
from pathlib import Path

from PIL import Image, ImageDraw

W, H, PAD = 360, 240, 36
COLOURS = ((31, 119, 180), (255, 127, 14))  # the first and second curve of a panel


def plot_curves(metrics: Path, out: Path) -> None:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]

    def series(key, scale=1.0):
        return [(r["epoch"], scale * r[key]) for r in records if key in r]

    panels = [("loss", [("", series("loss"))]),
              ("val top-1 %", [("RGB", series("val_top1")), ("TG", series("val_top1_tg"))]),
              ("pseudo-labels %", [("kept", series("mask_rate", 100)), ("right", series("pseudo_acc", 100))])]
    panels = [(title, [(name, points) for name, points in curves if points]) for title, curves in panels]
    panels = [(title, curves) for title, curves in panels if curves] or [("loss", [])]
    image = Image.new("RGB", (W * len(panels), H), "white")
    for i, (title, curves) in enumerate(panels):
        draw_panel(ImageDraw.Draw(image), i * W, title, curves)
    image.save(out)


def draw_panel(draw: ImageDraw.ImageDraw, left: int, title: str, curves: list) -> None:
    """Axes, the title, and each (name, points) curve in its colour, with the name in the title when two share."""
    x0, y0, x1, y1 = left + PAD, PAD // 2 + 12, left + W - PAD // 2, H - PAD
    draw.rectangle((x0, y0, x1, y1), outline="black")
    draw.text((x0, 4), title, fill="black")
    points = [p for _, curve in curves for p in curve]
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    lo, hi = min(ys), max(ys)
    hi = hi if hi > lo else lo + 1
    first, last = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    for k, ((name, curve), colour) in enumerate(zip(curves, COLOURS)):
        pixels = [(x0 + (x - first) / (last - first) * (x1 - x0), y1 - (y - lo) / (hi - lo) * (y1 - y0))
                  for x, y in curve]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
        if len(curves) > 1:
            draw.text((x0 + 110 + 60 * k, 4), name, fill=colour)
    draw.text((left + 2, y0), f"{hi:.3g}", fill="black")
    draw.text((left + 2, y1 - 10), f"{lo:.3g}", fill="black")
    draw.text((x0, y1 + 4), f"epoch {first}", fill="black")
    draw.text((x1 - 50, y1 + 4), f"{max(xs)}", fill="black")
