"""The pictures of a run, drawn with matplotlib's Agg backend (no display needed): curves.png, which each epoch
of `tgtrain run` redraws, and the confusion matrix of `tgtrain eval --png`.

matplotlib is imported when a picture is drawn, not with the module: most commands draw none.
"""

from pathlib import Path

import numpy as np

from tgtrain.run_folder import replace_atomically

LOSSES = {"loss": "total", "loss_sup": "supervised", "loss_unsup": "pseudo-label", "loss_align": "alignment",
          "loss_contrast": "contrast"}


def plot_curves(records: list[dict], path: Path, chance: float | None = None, title: str = "",
                pseudo_from: int | None = None) -> None:
    """curves.png from metrics.jsonl's records: the loss terms, val top-1 of RGB and TG, the pseudo-labels kept and
    right, and the learning rate, against the epoch. Epoch records draw points joined by lines (their means); step
    records draw faint lines within the epochs, so that a plot made after the first epoch already shows how it
    went. pseudo_from: the first epoch with pseudo-labels (None: the method has none)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    steps = [r for r in records if "at_epoch" in r]
    epochs = [r for r in records if "epoch" in r]
    figure = Figure(figsize=(12, 7.5), dpi=100)  # laid out by hand: matplotlib's layout engines double the time
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.91, wspace=0.17, hspace=0.22)
    (loss, val), (pseudo, lr) = figure.subplots(2, 2, sharex=True)
    for i, (key, name) in enumerate(LOSSES.items()):
        _series(loss, steps, epochs, key, name, f"C{i}")
    loss.set(title="training loss (points: epoch means; faint: every few steps)", ylabel="loss (per clip)")
    for i, (key, name) in enumerate((("val_top1", "RGB"), ("val_top1_tg", "TG (teacher)"))):
        values = [r[key] for r in epochs if key in r]
        if values:
            name += f": last {values[-1]:.1f} %, best {max(values):.1f} %"
        _series(val, [], epochs, key, name, f"C{i}")
    if chance is not None:
        val.axhline(100 * chance, color="grey", linestyle=":", label=f"chance {100 * chance:.1f} %")
    val.set(title="val top-1 (1 centre clip per video)", ylabel="top-1", ylim=(0, 100))
    val.yaxis.set_major_formatter(PercentFormatter())
    if pseudo_from is None:
        pseudo.text(0.5, 0.5, "this method uses no pseudo-labels", ha="center", va="center",
                    transform=pseudo.transAxes, color="grey")
    else:
        _series(pseudo, steps, epochs, "mask_rate", "kept (of unlabeled clips)", "C0", scale=100)
        _series(pseudo, steps, epochs, "pseudo_acc", "right (of those kept)", "C1", scale=100)
        if not any("mask_rate" in r for r in records):
            pseudo.text(0.5, 0.5, f"none yet: they start at epoch {pseudo_from}", ha="center", va="center",
                        transform=pseudo.transAxes, color="grey")
    pseudo.set(title="pseudo-labels", ylabel="share", ylim=(0, 102), xlabel="epoch")  # 100 % off the border
    pseudo.yaxis.set_major_formatter(PercentFormatter())
    _series(lr, steps, epochs, "lr", "learning rate", "C0", dots=not steps)
    lr.set(title="learning rate", ylabel="learning rate", xlabel="epoch")
    lr.set_ylim(bottom=0)
    last = max([r["epoch"] for r in epochs] + [r["at_epoch"] for r in steps] + [1])
    for axes in (loss, val, pseudo, lr):
        axes.set_xlim(0, last * 1.04)  # room for the last epoch's points and labels
        axes.xaxis.set_major_locator(MaxNLocator(integer=last >= 3, steps=[1, 2, 2.5, 5, 10]))  # or fractions
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small", loc="best")
    figure.suptitle(title or "training curves")
    replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))


def _series(axes, steps, epochs, key, name, colour, scale=1.0, dots=True) -> None:
    """One quantity in one colour: its epoch records' values as points joined by a line, over the step records' as a
    line that turns faint (the noise within the epochs) once there are two epochs to join. dots=False: the step
    line alone where there is one (the learning rate, which the epoch records only repeat)."""
    at = [(r["at_epoch"], scale * r[key]) for r in steps if key in r]
    per_epoch = [(r["epoch"], scale * r[key]) for r in epochs if key in r] if dots or not at else []
    faint = len(per_epoch) > 1
    if at:
        axes.plot(*zip(*at), color=colour, linewidth=0.8 if faint else 1.2, alpha=0.4 if faint else 1,
                  label=None if per_epoch else name)
    if per_epoch:
        axes.plot(*zip(*per_epoch), color=colour, marker="o", markersize=4, linewidth=1.5, label=name)


def plot_confusion(counts: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    """The confusion matrix as a picture: row i is the videos of true class i, each cell the share of them
    predicted as class j (rows normalised), with the classes named; cells carry their percentage when few."""
    from matplotlib.figure import Figure

    n = len(classes)
    seen = counts.sum(1, keepdims=True)
    shares = 100 * counts / np.maximum(seen, 1)
    side = min(32.0, max(6.0, 0.22 * n + 3))
    figure = Figure(figsize=(side + 1.5, side), dpi=100, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    figure.colorbar(image, ax=axes, shrink=0.8, label="% of the true class's videos")
    font = 9 if n <= 20 else 7 if n <= 60 else 5
    if n <= 150:
        names = [c if len(c) <= 24 else c[:23] + "…" for c in classes]
        axes.set_xticks(range(n), names, rotation=90, fontsize=font)
        axes.set_yticks(range(n), names, fontsize=font)
    if n <= 25:
        for i, j in zip(*np.nonzero(counts)):
            axes.text(j, i, f"{shares[i, j]:.0f}", ha="center", va="center", fontsize=font,
                      color="white" if shares[i, j] > 60 else "black")
    axes.set(xlabel="predicted class", ylabel="true class", title=title or "confusion matrix")
    replace_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))
