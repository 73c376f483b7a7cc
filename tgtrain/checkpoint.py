"""Checkpoints: one dict holds everything needed to resume, evaluate or apply the model; written atomically,
read weights-only."""

import math
from dataclasses import asdict
from pathlib import Path

import torch

from tgprep import limits
from tgprep.errors import UserError
from tgtrain.augment import MEAN, STD
from tgtrain.config import TrainConfig, stored_config
from tgtrain.methods import build_method
from tgtrain.run_folder import replace_atomically, writing


KEYS = ("model", "optimizer", "config", "classes", "epoch", "best", "best_epoch")  # what save_checkpoint writes
# and, absent in older ones: "precise_bn", whether its BN statistics were recomputed just before it was saved;
# "records", its epoch's records of metrics.jsonl (tgtrain.records); "input", how a video becomes the network's
# input (input_spec), for `tgtrain predict --video` and `tgtrain export` without the shards.
MAX_RECORDS = 100_000  # an epoch writes a few dozen


def save_checkpoint(out: Path, method, optimizer, config, classes, state, best: bool) -> None:
    """last.pt every epoch (and best.pt when val improved), each written whole under a temporary name and renamed;
    a full disk is one line (tgtrain.run_folder.writing) and leaves no temporary file. best.pt goes first: a run
    stopped between the two resumes from the last.pt before, and writes this epoch's best.pt again."""
    checkpoint = {"model": method.state_dict(), "optimizer": optimizer.state_dict(), "config": asdict(config),
                  "classes": classes, **state}
    with writing(out):
        for name in ("best.pt", "last.pt") if best else ("last.pt",):
            replace_atomically(out / name, lambda tmp: torch.save(checkpoint, tmp))


def input_spec(dataset: dict) -> dict:
    """What a checkpoint records of its input: the frames as the build made them (short side, frame rate; from
    dataset.json, None where it says nothing usable), then the normalisation the networks apply to uint8 RGB clips
    (N, T, H, W, 3). The clip's length, spacing and sizes and the test views are in its config."""
    built = dataset.get("config") if isinstance(dataset.get("config"), dict) else {}
    side, fps = built.get("short_side"), built.get("fps")
    return {"short_side": side if type(side) is int and 0 <= side <= limits.MAX_SIDE else None,
            "fps": float(fps) if type(fps) in (int, float) and 0 < fps <= 1000 else None,
            "mean": list(MEAN), "std": list(STD)}


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents; weights_only=True, so a checkpoint can hold tensors and plain values, never code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such checkpoint; give the last.pt or best.pt of a tgtrain run") from None
    except Exception as e:
        raise UserError(f"{path}: not a readable tgtrain checkpoint ({type(e).__name__}); was it written by tgtrain?") from None
    if not isinstance(checkpoint, dict) or not checkpoint.keys() >= set(KEYS):
        raise UserError(f"{path}: a torch file but not a tgtrain checkpoint (it lacks some of {', '.join(KEYS)}); "
                        "give the last.pt or best.pt of a tgtrain run")
    return checkpoint


def checkpoint_config(checkpoint: dict, path: Path) -> TrainConfig:
    """The run's config stored in a checkpoint, typed and range-checked exactly as a --config file, before any
    model is built from it (a stranger's checkpoint could ask for a network of any size)."""
    config = stored_config(checkpoint["config"], f"{path}: its stored config: ")
    if not isinstance(checkpoint["classes"], list) or not all(isinstance(c, str) for c in checkpoint["classes"]):
        raise UserError(f"{path}: its classes are not a list of names; give the last.pt or best.pt of a tgtrain run")
    return config


def trained_rgb(path: Path):
    """(the RGB network of a checkpoint, on the CPU: inference is RGB-only; its config; the checkpoint)."""
    checkpoint = read_checkpoint(path)
    config = checkpoint_config(checkpoint, path)
    method = build_method(config, len(checkpoint["classes"]))
    load_weights(method, checkpoint, path)
    return method.rgb, config, checkpoint


def checkpoint_input(checkpoint: dict, path: Path) -> dict:
    """The checkpoint's input_spec, checked; a checkpoint without one (saved before checkpoints carried it) is
    one line."""
    spec = checkpoint.get("input")
    if not isinstance(spec, dict) or spec.get("short_side") is None:
        raise UserError(f"{path}: does not record the short side and frame rate of its training data (a checkpoint "
                        "of an older tgtrain); train again, or classify shards with --data")
    side, fps, mean, std = (spec.get(k) for k in ("short_side", "fps", "mean", "std"))
    numbers = [v for v in (mean, std) if isinstance(v, list) and len(v) == 3 and all(type(x) is float for x in v)]
    if not (type(side) is int and 0 <= side <= limits.MAX_SIDE and (fps is None or (type(fps) is float and
            0 < fps <= 1000)) and len(numbers) == 2 and all(math.isfinite(x) and x > 0 for x in std)):
        raise UserError(f"{path}: its input settings are damaged; give the last.pt or best.pt of a tgtrain run")
    return spec


def load_checkpoint(path: Path, method, optimizer) -> dict:
    """Restore a run's model and optimizer for --resume; returns its epoch, best-so-far and records."""
    checkpoint = read_checkpoint(path)
    checkpoint_config(checkpoint, path)
    load_weights(method, checkpoint, path)
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: its optimizer state does not fit this model ({str(e)[:100]})") from None
    state = {k: checkpoint[k] for k in ("epoch", "best", "best_epoch")}
    if not (type(state["epoch"]) is int and type(state["best_epoch"]) is int and type(state["best"]) is float):
        raise UserError(f"{path}: its epoch, best or best_epoch is not a number; give the last.pt of a tgtrain run")
    records = checkpoint.get("records")
    if records is not None:
        if not (isinstance(records, list) and len(records) <= MAX_RECORDS and all(
                isinstance(r, dict) and all(isinstance(k, str) and type(v) in (int, float) for k, v in r.items())
                for r in records)):
            raise UserError(f"{path}: its records are not a list of metrics; give the last.pt of a tgtrain run")
        state["records"] = records
    return state


def load_weights(module, checkpoint: dict, path: Path) -> None:
    try:
        module.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{path}: does not fit this model ({str(e).splitlines()[0]}); "
                        "use the same --method / --preset / model settings it was trained with") from None
