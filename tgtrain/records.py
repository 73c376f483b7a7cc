"""A run's records: metrics.jsonl, TensorBoard events and curves.png, written by rank 0 alone.

metrics.jsonl holds one JSON object per line, of two kinds:
  step records, every few steps: "step" (optimizer steps so far), "at_epoch" (epochs so far, a fraction within
      one), "lr", the losses and pseudo-label rates over the steps since the last record, "clips_per_s";
  epoch records, at the end of each epoch: "epoch", "step", "lr", the epoch's mean losses, "mask_rate" and
      "pseudo_acc" (pseudo-labels kept, and right among those kept: absent when none was kept), "clips_per_s",
      "data_wait" (the share of the epoch the step waited on data), "precise_bn_s", "seconds", and after a
      validation "val_top1", "val_top5", "val_mean_class" (and "_tg" of each for LTG's TG network).
A file of epoch records alone (older runs) is read the same way.

An epoch's records reach metrics.jsonl only after its checkpoint is on disk, and the checkpoint carries them too.
So whatever stops a run (kill -9, a full disk between the two writes), `--resume` rebuilds metrics.jsonl as the
earlier epochs' records plus the checkpoint's own: what an uninterrupted run had written by that epoch.

The TensorBoard events hold every number of metrics.jsonl: "epoch/KEY" against the epoch, "step/KEY" against the
optimizer step, and the settings as text. They are written as the records are made, so `tensorboard --logdir runs`
shows a run live. On --resume they are written again from the rebuilt metrics.jsonl, which takes well under a
second, rather than cut with TensorBoard's purge_step: that hides the later events from TensorBoard's own reader,
but leaves them in the files, where other readers of event files see those steps twice.
"""

import json
import math
import time
from pathlib import Path

import torch

from tgtrain.config import TrainConfig, to_toml
from tgtrain.plots import plot_curves
from tgtrain.run_folder import EVENTS, replace_atomically, writing

METRICS, CURVES = "metrics.jsonl", "curves.png"
DRAW_EVERY = 30  # seconds at least between drawings of curves.png (0.3 s of CPU each) but for the first and last
COUNTERS = ("epoch", "step", "at_epoch")  # where a record lies in the run, not measured


class StepStats:
    """Sums of the steps' statistics, kept on the device; read with one transfer when shown or logged.

    pseudo_acc is summed weighted by its step's mask_rate, so that a mean of it is the share right of all the
    pseudo-labels kept over those steps, not a mean of per-step shares (in which a step that kept none counts
    as 0 % right); with none kept, there is no such share and no pseudo_acc."""

    def __init__(self):
        self.sums, self.steps, self.read, self.read_steps = {}, 0, {}, 0
        self.read_at = time.perf_counter()

    def add(self, stats: dict) -> None:
        stats = {key: value.detach().float() for key, value in stats.items()}
        if "pseudo_acc" in stats:
            stats["pseudo_acc"] = stats["pseudo_acc"] * stats["mask_rate"]
        for key, value in stats.items():
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1

    def window(self, clips_per_step: int) -> dict:
        """The means over the steps since the last window (or the start), and their clips_per_s."""
        totals, now = self._totals(), time.perf_counter()
        steps = self.steps - self.read_steps
        means = {key: (value - self.read.get(key, 0.0)) / steps for key, value in totals.items()}
        means["clips_per_s"] = clips_per_step * steps / (now - self.read_at)
        self.read, self.read_steps, self.read_at = totals, self.steps, now
        return _shares(means)

    def means(self) -> dict:
        """The means over all the steps added."""
        return _shares({key: value / self.steps for key, value in self._totals().items()})

    def _totals(self) -> dict:
        return dict(zip(self.sums, torch.stack(list(self.sums.values())).tolist())) if self.sums else {}


def _shares(means: dict) -> dict:
    if "pseudo_acc" in means:
        right = means.pop("pseudo_acc")
        if means["mask_rate"] > 0:
            means["pseudo_acc"] = right / means["mask_rate"]
    return means


def epoch_line(record: dict, epochs: int) -> str:
    """One line per epoch: the mean loss, val top-1 of RGB (and TG for ltg), and the pseudo-labels kept and right."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.3f}"]
    if "val_top1" in record:
        parts.append(f"val top-1 {record['val_top1']:.1f} %")
    if "val_top1_tg" in record:
        parts[-1] += f" (TG {record['val_top1_tg']:.1f} %)"
    if "mask_rate" in record:
        right = f"{100 * record['pseudo_acc']:.0f} %" if "pseudo_acc" in record else "-"  # of none kept: no share
        parts.append(f"pseudo-labels kept {100 * record['mask_rate']:.0f} %, right {right}")
    return " | ".join(parts)


def epoch_of(record: dict) -> int:
    """The epoch a record belongs to: its own, or for a step record the one it was made in."""
    return record["epoch"] if "epoch" in record else math.ceil(record["at_epoch"] - 1e-9)


def read_records(path: Path) -> list[dict]:
    """metrics.jsonl's records; a line that is not one (torn by a crash mid-write) is left out."""
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and ("epoch" in record or "at_epoch" in record):
            records.append(record)
    return records


class RunLog:
    """The records of one run (see the module's docstring); every method does nothing but on rank 0.

    A fresh run starts them empty; a resumed one at `state["epoch"]`, from metrics.jsonl and the records the
    checkpoint carries (state["records"]). `step` and `epoch` take records as they are made (TensorBoard at
    once); `commit`, called once the epoch's checkpoint is on disk, appends them to metrics.jsonl and redraws
    curves.png: after the first and the last epoch, and between them every DRAW_EVERY seconds at most (the
    live view is TensorBoard's)."""

    def __init__(self, out: Path, config: TrainConfig, state: dict, classes: int, rank: int = 0):
        self.on = rank == 0
        if not self.on:
            return
        from torch.utils.tensorboard import SummaryWriter  # 0.5 s to import: rank 0 of `run` only

        self.out, self.pending, self.epochs, self.drawn = out, [], config.epochs, None
        self.plot = dict(chance=1 / classes, title=f"{out}: {config.method}, {config.preset} preset, {config.epochs} "
                         "epochs",
                         pseudo_from=None if config.method == "supervised" else config.supervised_epochs + 1)
        with writing(out):
            (out / "config.toml").write_text(to_toml(config))
            self.records = resumed_records(out / METRICS, state) if state["epoch"] else []
            replace_atomically(out / METRICS, lambda tmp: tmp.write_text(
                "".join(json.dumps(r) + "\n" for r in self.records)))
            for old in out.glob(EVENTS):
                old.unlink()
            self.writer = SummaryWriter(str(out), flush_secs=10)
            self.writer.add_text("settings", "    " + to_toml(config).replace("\n", "\n    "))  # as code
            for record in self.records:
                self._event(record)
            self.writer.flush()

    def step(self, record: dict) -> None:
        if self.on:
            self.pending.append(record)
            with writing(self.out):
                self._event(record)

    def epoch(self, record: dict) -> list[dict]:
        """Takes the epoch's record; returns the epoch's records, for its checkpoint to carry."""
        if not self.on:
            return []
        self.pending.append(record)
        with writing(self.out):
            self._event(record)
            self.writer.flush()
        return self.pending

    def commit(self) -> None:
        if not self.on:
            return
        with writing(self.out):
            with open(self.out / METRICS, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in self.pending))
            self.records += self.pending
            self.pending = []
            if self.drawn is None or time.monotonic() - self.drawn > DRAW_EVERY or epoch_of(
                    self.records[-1]) == self.epochs:
                plot_curves(self.records, self.out / CURVES, **self.plot)
                self.drawn = time.monotonic()

    def close(self) -> None:
        if self.on:
            with writing(self.out):
                self.writer.close()

    def _event(self, record: dict) -> None:
        kind, at = ("epoch", record["epoch"]) if "epoch" in record else ("step", record["step"])
        for key, value in record.items():
            if key not in COUNTERS:
                self.writer.add_scalar(f"{kind}/{key}", value, at)


def resumed_records(path: Path, state: dict) -> list[dict]:
    """metrics.jsonl as it stood when the checkpoint of state["epoch"] was written: the records of the epochs
    before it, then the checkpoint's own records of its epoch (older checkpoints carry none: metrics.jsonl's)."""
    epoch, records = state["epoch"], read_records(path)
    carried = state.get("records")
    if carried is None:
        carried = [r for r in records if epoch_of(r) == epoch]
    return [r for r in records if epoch_of(r) < epoch] + carried
