"""Checkpoints: one dict holds everything needed to resume or evaluate; written atomically, read weights-only."""

import os
from dataclasses import asdict
from pathlib import Path

import torch

from tgprep.errors import UserError
from tgtrain.config import TrainConfig, stored_config


KEYS = ("model", "optimizer", "config", "classes", "epoch", "best", "best_epoch")  # what save_checkpoint writes
# and "precise_bn": whether its BN statistics were recomputed just before it was saved (absent in older ones)


def save_checkpoint(out: Path, method, optimizer, config, classes, state, best: bool) -> None:
    """last.pt every epoch (and best.pt when val improved), written under a temporary name and renamed."""
    checkpoint = {"model": method.state_dict(), "optimizer": optimizer.state_dict(), "config": asdict(config),
                  "classes": classes, **state}
    tmp = out / "last.pt.tmp"
    torch.save(checkpoint, tmp)
    os.replace(tmp, out / "last.pt")
    if best:
        torch.save(checkpoint, tmp)
        os.replace(tmp, out / "best.pt")


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


def load_checkpoint(path: Path, method, optimizer) -> dict:
    """Restore a run's model and optimizer for --resume; returns its epoch and best-so-far."""
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
    return state


def load_weights(module, checkpoint: dict, path: Path) -> None:
    try:
        module.load_state_dict(checkpoint["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{path}: does not fit this model ({str(e).splitlines()[0]}); "
                        "use the same --method / --preset / model settings it was trained with") from None
