"""tgtrain's loop and commands on real shards with a micro model: DDP, resume, the run folder, eval, bad input."""

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from contextlib import nullcontext
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from tests.test_augment import ScalarReads
from tests.trained import CLASSES, MICRO, micro, one_torch_thread, tgtrain
from tgtrain import waiting
from tgtrain.config import make_config, to_toml
from tgtrain.engine import StepStats, learning_rate, to_device, train, train_step
from tgtrain.methods import build_method

one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def state_dict_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


# -- DDP ---------------------------------------------------------------------------------------------------

def _ddp_rank(rank: int, config, port: int, folder: Path) -> None:
    """One rank as torchrun would start it. A global forward hook catches the method module, so that every rank
    can save its final parameters, not only rank 0 in its checkpoint."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    seen = []
    torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.append(module) if type(module).__name__ in ("LTG", "Supervised") else None)
    train(config)
    torch.save(seen[-1].state_dict(), folder / f"rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(config, folder: Path) -> tuple[dict, dict]:
    """Train config on two gloo ranks, within 120 s; each rank's final parameters."""
    ranks = mp.spawn(_ddp_rank, args=(config, free_port(), folder), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while not ranks.join(timeout=1):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("a 2-rank run did not finish in 120 s: a rank hangs")
    return tuple(torch.load(folder / f"rank{r}.pt", weights_only=True) for r in (0, 1))


@pytest.mark.parametrize("method", ["ltg", "supervised"])  # ltg also gathers features across ranks
def test_two_ranks_on_uneven_shards_finish_with_the_same_parameters(shards, tmp_path, method):
    rank0, rank1 = two_ranks(micro(shards, tmp_path / "run", method), tmp_path)
    assert_same_tensors(rank0, rank1)  # BN statistics included
    assert_same_tensors(rank0, state_dict_of(tmp_path / "run" / "last.pt"))


# -- resume ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 1])
def test_resume_gives_the_parameters_of_an_uninterrupted_run(shards, tmp_path, workers):
    whole = micro(shards, tmp_path / "whole", workers=workers)
    train(whole)
    train(replace(whole, out=str(tmp_path / "halves"), epochs=1))
    train(replace(whole, out=str(tmp_path / "halves")), resume=True)
    assert_same_tensors(state_dict_of(tmp_path / "whole" / "last.pt"), state_dict_of(tmp_path / "halves" / "last.pt"))
    assert measured(tmp_path / "whole") == measured(tmp_path / "halves")  # the same losses, lr and val per step


TIMES = ("clips_per_s", "data_wait", "precise_bn_s", "seconds")  # the records that depend on the machine's speed


def measured(run: Path) -> list[dict]:
    """A run's records in metrics.jsonl, without their times."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMES} for line in lines]


# -- the run folder, eval, predict -------------------------------------------------------------------------

def test_run_folder_holds_config_metrics_curves_and_checkpoints(ltg_run, shards):
    assert make_config(file=str(ltg_run / "config.toml")) == micro(shards, ltg_run)
    records = [json.loads(line) for line in (ltg_run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "epoch" not in r]  # a record every few steps: 3 steps, all of them here
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6] and [r["at_epoch"] for r in steps][2::3] == [1, 2]
    records = [r for r in records if "epoch" in r]
    assert [r["epoch"] for r in records] == [1, 2] and [r["step"] for r in records] == [3, 6]
    for r in records:
        assert r["loss"] > 0 and r["lr"] > 0 and 0 <= r["val_top1"] <= r["val_top5"] == 100  # 3 classes
        assert 0 <= r["val_mean_class"] <= 100 and 0 <= r["data_wait"] <= 1 and r["seconds"] > r["precise_bn_s"] > 0
    assert "mask_rate" not in records[0]  # the supervised warm-up epoch has no pseudo-labels
    assert 0 <= records[1]["mask_rate"] <= 1 and ("pseudo_acc" in records[1]) == (records[1]["mask_rate"] > 0)
    with Image.open(ltg_run / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 100
        assert len(image.getcolors(1 << 16)) > 2  # axes, text and curves, not a blank canvas
    last, best = (torch.load(ltg_run / name, weights_only=True) for name in ("last.pt", "best.pt"))
    assert last["epoch"] == 2 and last["classes"] == CLASSES and last["config"]["width"] == 4
    assert best["epoch"] == best["best_epoch"] and best["best"] == max(r["val_top1"] for r in records)


def test_eval_prints_top1_top5_mean_class_accuracy_and_a_table_per_class(ltg_run, shards, tmp_path):
    result = tgtrain("eval", "--ckpt", ltg_run / "best.pt", "--data", shards, "--clips", 2, "--crops", 3,
                     "--workers", 0, "--png", tmp_path / "confusion.png")
    assert result.exit_code == 0, result.output + result.stderr
    head, columns, *rows = result.stdout.splitlines()
    assert head.startswith("top-1 ") and "top-5 100.0 %" in head and "(6 videos)" in head
    assert columns.split() == ["class", "videos", "top-1", "%", "mistaken", "most", "for"]
    per_class = {row.split()[0]: float(row.split()[2]) for row in rows}
    assert sorted(per_class) == CLASSES and all(row.split()[1] == "2" for row in rows)
    for row in rows:  # a class all right is mistaken for none; else for another, on some of its 2 videos
        assert row.split()[3:] == ["-"] if row.split()[2] == "100.0" else row.split()[3] in CLASSES
    mean = float(head.split("mean class accuracy ")[1].split()[0])
    assert mean == pytest.approx(sum(per_class.values()) / 3, abs=0.06)  # 2 videos in every class
    with Image.open(tmp_path / "confusion.png") as image:
        assert image.format == "PNG" and min(image.size) >= 500 and len(image.getcolors(1 << 20)) > 50
    # one centre clip and crop is the validation protocol: the same top-1 as the best epoch's
    single = tgtrain("eval", "--ckpt", ltg_run / "best.pt", "--data", shards, "--clips", 1, "--crops", 1,
                     "--workers", 0)
    best = torch.load(ltg_run / "best.pt", weights_only=True)["best"]
    assert single.stdout.startswith(f"top-1 {best:.1f} %")


def test_predict_writes_scores_and_features_of_every_val_video(ltg_run, shards, tmp_path):
    result = tgtrain("predict", "--ckpt", ltg_run / "best.pt", "--data", shards, "--out", tmp_path / "p.h5",
                     "--clips", 2, "--crops", 1, "--workers", 1)
    assert result.exit_code == 0, result.output + result.stderr
    val = {key: CLASSES.index(key.split("_")[1]) for p in shards.glob("val-*.json")
           for key in json.loads(p.read_text())["keys"]}
    with h5py.File(tmp_path / "p.h5") as h5:
        keys = [k.decode() for k in h5["keys"][:]]
        labels, scores, features = h5["labels"][:], h5["scores"][:], h5["features"][:]
    assert sorted(keys) == sorted(val) and len(keys) == 6
    assert labels.tolist() == [val[k] for k in keys]
    assert scores.shape == (6, 3) and abs(scores.sum(1) - 1).max() < 1e-5
    assert features.shape == (6, 8 * MICRO["width"])  # the last stage is 8x the first


def with_config(ckpt: Path, folder: Path, **changes) -> Path:
    """A copy of a checkpoint whose stored config (or other entries, such as precise_bn) is changed."""
    checkpoint = torch.load(ckpt, weights_only=True)
    config = {**checkpoint["config"], **{k: v for k, v in changes.items() if k in checkpoint["config"]}}
    checkpoint.update({k: v for k, v in changes.items() if k not in config}, config=config)
    folder.mkdir(exist_ok=True)
    torch.save(checkpoint, folder / ckpt.name)
    return folder / ckpt.name


@pytest.fixture
def network_inputs():
    """The shapes of every clip batch an R3D backbone is given while the test runs (in this process)."""
    shapes = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: shapes.append(tuple(args[0].shape)) if type(module).__name__ == "R3D" else None)
    yield shapes
    hook.remove()


def test_eval_views_follow_test_views_and_missing_precise_bn_is_done_first(ltg_run, shards, tmp_path, network_inputs):
    """"full": the whole loaded squares (24 px here), "center": centre crops at the training size (16). A checkpoint
    saved without PreciseBN gets it on the data's training pool first (its batches: clips of the size too)."""
    args = ["--data", shards, "--clips", 1, "--crops", 3, "--workers", 0, "--out", tmp_path / "p.h5"]
    scores = {}
    for views, precise in (("full", True), ("center", True), ("center", False)):
        ckpt = with_config(ltg_run / "best.pt", tmp_path / f"{views}{precise}", load_size=24, test_views=views,
                           precise_bn_batches=2, precise_bn=precise)
        network_inputs.clear()
        assert tgtrain("predict", "--ckpt", ckpt, *args).exit_code == 0
        side = 24 if views == "full" else 16
        precise_bn_shapes = [] if precise else [(4, 3, 4, 16, 16)] * 2
        assert network_inputs == precise_bn_shapes + [(4 * 3, 3, 4, side, side), (2 * 3, 3, 4, side, side)]
        with h5py.File(tmp_path / "p.h5") as h5:
            scores[views, precise] = h5["scores"][:]
    assert not np.allclose(scores["center", True], scores["center", False])  # other BN statistics


# -- one training step: nothing read back from the device ------------------------------------------------------

def prepared_step(device, autocast):
    """One LTG step after the supervised warm-up as the loop runs it (train_step, then the statistics' sums), on
    micro batches already on the device; everything else made beforehand."""
    config = micro(Path("."), Path("."))
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, config.clip_len, config.load_size, config.load_size, 3)

    def batch():
        label = torch.randint(3, (config.batch_size,), generator=generator)
        values = {"rgb": torch.randint(256, shape, dtype=torch.uint8, generator=generator),
                  "tg": torch.randint(256, shape, dtype=torch.uint8, generator=generator), "label": label,
                  "true_label": label}
        return {k: v.pin_memory() if device.type == "cuda" else v for k, v in values.items()}

    labeled, unlabeled = to_device(batch(), device), to_device(batch(), device)
    method = build_method(config, 3).to(device)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.01, momentum=0.9)
    stats = StepStats()

    def step():
        stats.add(train_step(method, optimizer, labeled, unlabeled, True, generator, autocast, config.clip_grad))
        return stats
    return step


def test_a_training_step_reads_no_value_back():
    """The whole LTG step (weak and strong views, both networks, all losses, backward, clipping, SGD, the sums of
    its statistics): no value of a tensor is read into Python, so on CUDA nothing makes the host wait."""
    step = prepared_step(torch.device("cpu"), nullcontext())
    step()  # the first step sets up the optimizer's state
    with ScalarReads() as mode:
        stats = step()
    assert mode.reads == 0
    means = stats.means()  # read once, when shown or logged
    assert {"loss", "loss_sup", "loss_align", "loss_contrast", "loss_unsup", "mask_rate"} <= means.keys()
    assert all(isinstance(v, float) for v in means.values())


@pytest.mark.parametrize("name", ["fixmatch", "ltg"])
def test_strong_views_go_through_the_warm_up_unless_warmup_strong_is_off(name):
    """As the reference, each network sees labeled, weak and strong clips at once from the first step (its BN
    statistics include the strong views); with warmup_strong off, the strong views wait for the unlabeled losses."""
    generator = torch.Generator().manual_seed(0)
    shape = (4, 4, 16, 16, 3)
    clips = {m: torch.randint(256, shape, dtype=torch.uint8, generator=generator) for m in ("rgb", "tg")}
    labels = {"label": torch.arange(4) % 3, "true_label": torch.arange(4) % 3}
    for warmup_strong, sizes in ((True, [12, 12]), (False, [8, 12])):  # in the warm-up, then after it
        method = build_method(micro(Path("."), Path("."), name, warmup_strong=warmup_strong), 3)
        seen = []
        for network in (getattr(method, modality) for modality in method.modalities):
            network.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
        for use_unlabeled in (False, True):
            seen.clear()
            method({**clips, **labels}, {**clips, **labels}, use_unlabeled, generator)
            assert set(seen) == {sizes[use_unlabeled]}, (name, warmup_strong, use_unlabeled, seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_training_step_makes_no_host_sync():
    """Under torch.cuda.set_sync_debug_mode("error") every synchronising call (a value read, a blocking copy)
    raises. ("warn" also warns once that the mode is a prototype, which a filter on the word "synchronize" took for
    a sync on the first GPU run.)"""
    step = prepared_step(torch.device("cuda"), torch.autocast("cuda", dtype=torch.bfloat16))
    step()  # cuDNN's algorithm search, the optimizer's state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_learning_rate_is_the_reference_cosine_with_linear_warm_up():
    """MMAction2's CosineAnnealing (by epoch, min_lr 0) times its linear warm-up (warmup_ratio 0.1, by step)."""
    config, steps, peak = make_config("hmdb51"), 10, 0.2
    lr = [[learning_rate(e, s, steps, config, peak) for s in range(steps)] for e in range(config.epochs)]
    assert lr[0][0] == pytest.approx(0.1 * peak)  # the warm-up starts at 0.1 x lr
    assert lr[30][0] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 30 / 360)) * (0.1 + 0.9 * 300 / 600))
    assert lr[60][0] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 60 / 360)))  # warm-up done
    assert lr[60][0] == lr[60][9] > lr[61][0]  # after it, one value per epoch
    assert lr[359][9] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 359 / 360))) and lr[359][9] < 1e-4
    assert all(a < b for epoch in lr[:60] for a, b in zip(epoch, epoch[1:]))  # rising through each warm-up epoch


# -- bad input: one line, exit code 2 ----------------------------------------------------------------------

def copy_without(source: Path, folder: Path, pattern: str | None = None) -> Path:
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(pattern) if pattern else None)
    return folder


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0]


def run_args(data: Path, out: Path, *more) -> list:
    return ["run", "--preset", "tiny", "--data", data, "--out", out, "--workers", 0, *more]


def test_missing_data_folder(tmp_path):
    assert_one_line_error(tgtrain(*run_args(tmp_path / "nowhere", tmp_path / "out")), "nowhere", "tgprep build")


def test_output_without_val_shards(shards, tmp_path):
    data = copy_without(shards, tmp_path / "data", "val-*")
    assert_one_line_error(tgtrain(*run_args(data, tmp_path / "out")), "no val shards")


def test_truncated_shard(ltg_run, shards, tmp_path):
    data = copy_without(shards, tmp_path / "data")
    for tar in (data / "labeled-000001.tar", data / "val-000001.tar"):
        tar.write_bytes(tar.read_bytes()[:-3000])
    assert_one_line_error(tgtrain(*run_args(data, tmp_path / "out")), "labeled-000001.tar", "truncated")
    assert_one_line_error(tgtrain("eval", "--ckpt", ltg_run / "best.pt", "--data", data, "--workers", 0),
                          "val-000001.tar", "truncated")


def test_a_loader_worker_killed_mid_run_is_one_line_naming_workers_and_resume(shards, tmp_path):
    settings = tmp_path / "long.toml"
    settings.write_text(to_toml(micro(shards, tmp_path / "out", "supervised", epochs=500, supervised_epochs=500,
                                      workers=2)))
    run = subprocess.Popen([sys.executable, "-m", "tgtrain", "run", "--preset", "tiny", "--config", settings,
                            "--data", shards, "--out", tmp_path / "out", "--method", "supervised"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{run.pid}/task/{run.pid}/children")
    deadline = time.monotonic() + 60
    try:  # killed as soon as it starts, maybe while the loader starts its other worker (tgtrain.data.Loader)
        while not children.read_text().split() and time.monotonic() < deadline:  # its DataLoader workers
            time.sleep(0.1)
        os.kill(int(children.read_text().split()[0]), signal.SIGKILL)
        _, stderr = run.communicate(timeout=60)
    finally:
        run.kill()  # a run the kill did not stop would train its 500 epochs on after the test
    lines = stderr.splitlines()
    assert run.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: DataLoader worker"), stderr
    # torch says "is killed by signal: Killed" or "exited unexpectedly", by which of its checks sees it first
    assert ("killed by signal" in lines[0] or "exited unexpectedly" in lines[0]), lines[0]
    assert "--workers" in lines[0] and "--resume" in lines[0]


def test_damaged_shard_of_the_right_size(ltg_run, shards, tmp_path):
    """A sample whose .json is garbage, the tar's size unchanged: found while reading, in the training process
    (workers 0) or in a DataLoader worker (workers 1)."""
    data = copy_without(shards, tmp_path / "data")
    for name in ("labeled-000001.tar", "val-000001.tar"):
        with tarfile.open(data / name) as tar:
            meta = next(m for m in tar if m.name.endswith(".json"))
        with open(data / name, "r+b") as f:
            f.seek(meta.offset_data)
            f.write(b"x" * meta.size)
    assert_one_line_error(tgtrain(*run_args(data, tmp_path / "out")), "labeled-000001.tar", "not valid JSON")
    assert_one_line_error(tgtrain("eval", "--ckpt", ltg_run / "best.pt", "--data", data, "--workers", 1),
                          "val-000001.tar", "not valid JSON")


def test_resume_of_a_run_of_another_model(ltg_run, shards, tmp_path):
    out = copy_without(ltg_run, tmp_path / "run")
    assert_one_line_error(tgtrain(*run_args(shards, out, "--resume", "--method", "supervised")), "last.pt", "--method")
    wider = tmp_path / "wider.toml"
    wider.write_text((out / "config.toml").read_text().replace("width = 4", "width = 8"))
    assert_one_line_error(tgtrain(*run_args(shards, out, "--resume", "--config", wider)), "last.pt", "does not fit")
    assert_one_line_error(tgtrain(*run_args(shards, tmp_path / "empty", "--resume")), "last.pt")
    with_config(out / "last.pt", out, blocks=(10**7, 1, 1, 1))  # checked before its weights are loaded
    assert_one_line_error(tgtrain(*run_args(shards, out, "--resume")), "last.pt", "its stored config", "blocks")


def test_eval_with_a_checkpoint_of_other_classes(ltg_run, shards, tmp_path):
    data = copy_without(shards, tmp_path / "data")
    meta = json.loads((data / "dataset.json").read_text())
    (data / "dataset.json").write_text(json.dumps({**meta, "classes": CLASSES + ["swim"]}))
    assert_one_line_error(tgtrain("eval", "--ckpt", ltg_run / "best.pt", "--data", data), "best.pt", "classes")


@pytest.mark.parametrize("content", ["text", "tensor", "dict"])
def test_a_file_that_is_not_a_checkpoint(shards, tmp_path, content):
    ckpt = tmp_path / "model.pt"
    if content == "text":
        ckpt.write_text("not a checkpoint")
    else:
        torch.save(torch.zeros(3) if content == "tensor" else {"model": {}}, ckpt)
    assert_one_line_error(tgtrain("eval", "--ckpt", ckpt, "--data", shards), "model.pt")
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(ckpt, out / "last.pt")
    assert_one_line_error(tgtrain(*run_args(shards, out, "--resume")), "last.pt")


def test_run_warns_once_when_the_step_waits_on_data(shards, tmp_path, capsys):
    """With workers 0 the training process decodes its own batches, and a micro model's step is short: most of
    each epoch waits on data, and the warning names --workers, once over the two epochs."""
    train(micro(shards, tmp_path / "starved", method="supervised", workers=0))
    err = capsys.readouterr().err
    assert err.count("waited on data") == 1 and "--workers 0" in err, err


def test_no_data_warning_below_a_fifth_of_the_epoch():
    assert waiting.starved(0.19, 1.0, 4) is None
    assert "--workers 4" in waiting.starved(0.21, 1.0, 4)
