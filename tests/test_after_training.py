"""What a user meets around a run: short runs, the records (metrics.jsonl, TensorBoard, curves.png), a run folder
that is one run's (lock, refusal, kill -9, a full disk), eval's and predict's options, mean class accuracy,
classifying video files, and the exported model loaded without tgtrain."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from tests.test_engine import assert_one_line_error, copy_without, measured, with_config
from tests.test_executor import small_disk  # noqa: F401  (a 3 MB tmpfs)
from tests.trained import CLASSES, micro, one_torch_thread, tgtrain
from tgtrain import augment
from tgtrain.checkpoint import trained_rgb
from tgtrain.config import to_toml
from tgtrain.engine import train
from tgtrain.evaluate import evaluate
from tgtrain.models import Output
from tgtrain.plots import plot_curves
from tgtrain.records import StepStats, epoch_line, epoch_of, read_records, resumed_records

one_thread = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
COUNTERS = ("epoch", "step", "at_epoch")
# the micro model's settings as --set, leaving the schedule to scale
MICRO_SET = [a for s in ("width=4", "blocks=1,1,1,1", "proj_dim=8", "size=16", "load_size=16", "clip_len=4",
                         "batch_size=4", "workers=0", "precise_bn_batches=2") for a in ("--set", s)]


# -- short runs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, epochs, note", [
    ("tiny", 1, "note: epochs 1: warm-up 0, supervised 0 (the tiny preset's 1/24 and 8/24 of its 24)"),
    ("hmdb51", 3, "note: epochs 3: warm-up 1, supervised 1 (the hmdb51 preset's 60/360 and 60/360 of its 360)"),
])
def test_a_short_run_scales_its_schedule_and_runs(shards, tmp_path, preset, epochs, note):
    result = tgtrain("run", "--preset", preset, "--epochs", epochs, *MICRO_SET, "--data", shards, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == note
    assert [r["epoch"] for r in read_records(tmp_path / "metrics.jsonl") if "epoch" in r] == list(range(1, epochs + 1))


# -- the records ----------------------------------------------------------------------------------------------

def scalars(folder: Path) -> tuple[dict, EventAccumulator]:
    """The scalars of a folder's TensorBoard events, read by TensorBoard's own reader: tag -> [(step, value)]."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def as_events(records: list[dict]) -> dict:
    """What the events of these records must hold: every number but the counters, as float32."""
    expected = {}
    for r in records:
        kind, at = ("epoch", r["epoch"]) if "epoch" in r else ("step", r["step"])
        for key, value in r.items():
            if key not in COUNTERS:
                expected.setdefault(f"{kind}/{key}", []).append((at, float(np.float32(value))))
    return expected


def test_tensorboard_events_hold_every_number_of_metrics_jsonl_and_the_settings(ltg_run):
    found, events = scalars(ltg_run)
    records = read_records(ltg_run / "metrics.jsonl")
    assert found == as_events(records)
    assert {"epoch/val_top1", "epoch/val_top1_tg", "epoch/lr", "step/loss_contrast", "epoch/data_wait"} <= set(found)
    settings = events.Tensors("settings/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "    width = 4\n" in settings and '    method = "ltg"\n' in settings


def blue_pixels(image: np.ndarray) -> int:
    """Pixels of matplotlib's first colour (C0), which every panel's first curve is drawn in."""
    return int((np.abs(image.astype(int) - (31, 119, 180)).sum(-1) < 60).sum())


def test_curves_show_the_first_epoch_and_read_older_metrics_files(ltg_run, tmp_path):
    records = read_records(ltg_run / "metrics.jsonl")
    cases = {"first epoch": [r for r in records if epoch_of(r) == 1], "whole run": records,
             "epoch records alone": [r for r in records if "epoch" in r]}  # an older metrics.jsonl
    for name, some in cases.items():
        plot_curves(some, tmp_path / "curves.png", chance=1 / 3, title=name, pseudo_from=2)
        with Image.open(tmp_path / "curves.png") as png:
            image = np.asarray(png.convert("RGB"))
        h, w = image.shape[:2]
        loss, val, lr = image[:h // 2, :w // 2], image[:h // 2, w // 2:], image[h // 2:, w // 2:]
        # curves, not empty boxes; the first epoch's val is a point (with its legend and its value)
        assert min(blue_pixels(loss), blue_pixels(lr)) > 250 and blue_pixels(val) > 60, name
    assert not list(tmp_path.glob("*.tmp"))


def test_step_stats_share_right_of_those_kept_and_the_epoch_line_shows_none_kept_as_a_dash():
    stats = StepStats()
    for kept, right in ((0.5, 1.0), (0.0, 0.0), (0.25, 0.0)):  # 2 of 4 right, none kept, 0 of 1 right
        stats.add({"loss": torch.tensor(1.0), "mask_rate": torch.tensor(kept), "pseudo_acc": torch.tensor(right)})
    means = stats.means()
    assert means["mask_rate"] == pytest.approx(0.25) and means["pseudo_acc"] == pytest.approx(2 / 3)
    stats.add({"loss": torch.tensor(3.0), "mask_rate": torch.tensor(0.0), "pseudo_acc": torch.tensor(0.0)})
    window = stats.window(clips_per_step=8)
    assert window["loss"] == 1.5 and "pseudo_acc" in window and window["clips_per_s"] > 0
    stats.add({"loss": torch.tensor(5.0), "mask_rate": torch.tensor(0.0), "pseudo_acc": torch.tensor(0.0)})
    window = stats.window(clips_per_step=8)  # the steps since the last window: one that kept none
    assert window.pop("clips_per_s") > 0 and window == {"loss": 5.0, "mask_rate": 0.0}
    assert epoch_line({"epoch": 9, "loss": 1.0, **window}, 24).endswith("pseudo-labels kept 0 %, right -")
    assert epoch_line({"epoch": 9, "loss": 1.0, **means}, 24).endswith("pseudo-labels kept 25 %, right 67 %")


def test_resumed_records_are_the_checkpoints_epochs_whatever_metrics_jsonl_holds(tmp_path):
    """Ahead of the checkpoint (killed before it was saved), behind it (killed after it, before metrics.jsonl),
    torn mid-line: the records of the epochs before the checkpoint's, then the checkpoint's own."""
    def epoch(n):
        return [{"step": 2 * n - 1, "at_epoch": n - 0.5, "loss": n}, {"step": 2 * n, "at_epoch": float(n), "loss": n},
                {"epoch": n, "step": 2 * n, "loss": n}]
    metrics = tmp_path / "metrics.jsonl"
    for held, torn in (([*epoch(1), *epoch(2), *epoch(3)[:1]], ""), (epoch(1), '{"epoch": 2, "st')):
        metrics.write_text("".join(json.dumps(r) + "\n" for r in held) + torn)
        assert resumed_records(metrics, {"epoch": 2, "records": epoch(2)}) == epoch(1) + epoch(2)
    assert resumed_records(metrics, {"epoch": 1}) == epoch(1)  # a checkpoint that carries no records


# -- a run folder is one run's ----------------------------------------------------------------------------------

def run_command(settings: Path, *more) -> list:
    return [sys.executable, "-m", "tgtrain", "run", "--config", settings, *more]


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """An uninterrupted micro run of 4 epochs, and its settings as micro.toml beside it."""
    folder = tmp_path_factory.mktemp("reference")
    config = micro(shards, folder / "run", epochs=4)
    (folder / "micro.toml").write_text(to_toml(config))
    train(config)
    return folder / "run"


def test_kill_9_mid_run_then_resume_gives_the_records_of_an_uninterrupted_run(reference, tmp_path):
    """While a run holds its folder a second is refused; killed at once after its first checkpoint, the same
    command with --resume ends with the uninterrupted run's metrics.jsonl, and events that hold it exactly."""
    out = tmp_path / "run"
    command = run_command(reference.parent / "micro.toml", "--out", out)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "last.pt").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = tgtrain("run", "--config", reference.parent / "micro.toml", "--out", out)
    os.kill(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    assert_one_line_error(second, str(out), f"another tgtrain run (process {first.pid}) is writing here")
    assert first.returncode == -signal.SIGKILL, "the run ended before it was killed: give it more epochs"
    resumed = tgtrain("run", "--config", reference.parent / "micro.toml", "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert measured(out) == measured(reference)
    assert scalars(out)[0] == as_events(read_records(out / "metrics.jsonl"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("events.")) == [
        ".lock", "best.pt", "config.toml", "curves.png", "last.pt", "metrics.jsonl"]


def test_a_full_disk_is_one_line_and_resume_ends_as_an_uninterrupted_run(reference, small_disk):  # noqa: F811
    """On 3 MB, with micro checkpoints of 1 MB, the second epoch's last.pt finds no room."""
    out = small_disk / "run"
    full = tgtrain("run", "--config", reference.parent / "micro.toml", "--out", out)
    line = full.stderr.splitlines()[-1]  # after the epochs' lines
    assert full.exit_code == 2 and "Traceback" not in full.output, full.output
    assert line.startswith(f"error: {out}: ") and "free some space there" in line and "--resume" in line, line
    assert not list(out.glob("*.tmp"))
    saved = torch.load(out / "last.pt", weights_only=True)["epoch"]
    assert {epoch_of(r) for r in read_records(out / "metrics.jsonl")} == set(range(1, saved + 1))  # none ahead
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    resumed = tgtrain("run", "--config", reference.parent / "micro.toml", "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert measured(out) == measured(reference)  # each epoch once


def test_a_used_run_folder_needs_resume_or_overwrite(ltg_run, shards, tmp_path):
    out = copy_without(ltg_run, tmp_path / "run")
    settings = ["--config", ltg_run.parent / "micro.toml", "--out", out]
    assert_one_line_error(tgtrain("run", *settings), str(out), "holds a run already", "--resume", "--overwrite")
    assert_one_line_error(tgtrain("run", *settings, "--resume", "--overwrite"), "give one of them")
    assert_one_line_error(tgtrain("run", *settings[:2], "--out", tmp_path / "new", "--resume"), "no last.pt")
    assert not (tmp_path / "new").exists()
    assert_one_line_error(tgtrain("run", *settings[:2], "--out", out / "config.toml"), "is a file")
    (out / "last.pt.tmp").write_bytes(b"half a checkpoint")  # left by a kill
    replaced = tgtrain("run", *settings, "--overwrite", "--seed", 1)
    assert replaced.exit_code == 0, replaced.output
    assert torch.load(out / "last.pt", weights_only=True)["config"]["seed"] == 1
    assert len(list(out.glob("events.*"))) == 1 and not list(out.glob("*.tmp"))


# -- eval and predict -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, words", [
    ("--clips", 0, ["--clips", "0"]), ("--clips", -1, ["--clips"]), ("--clips", 1000000, ["--clips"]),
    ("--batch-size", 0, ["--batch-size"]), ("--workers", -1, ["--workers"]), ("--crops", 2, ["--crops"]),
])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_every_option_of_eval_and_predict_has_a_range(ltg_run, shards, tmp_path, command, option, value, words):
    more = ["--out", tmp_path / "p.h5"] if command == "predict" else []
    result = tgtrain(command, "--ckpt", ltg_run / "best.pt", "--data", shards, *more, option, value)
    assert_one_line_error(result, *words)


def test_a_batch_that_would_not_fit_in_memory_is_one_line(ltg_run, shards, tmp_path):
    big = with_config(ltg_run / "best.pt", tmp_path, load_size=512, size=16)
    result = tgtrain("eval", "--ckpt", big, "--data", shards, "--batch-size", 64, "--clips", 100)
    assert_one_line_error(result, "GB per batch", "--batch-size")


class Writes(nn.Module):
    """A network that predicts the class written into its clips' pixels."""

    def __init__(self, classes: int):
        super().__init__()
        self.head = SimpleNamespace(fc=nn.Linear(1, classes))

    def forward(self, x):
        written = (x[:, 0, 0, 0, 0] * augment.STD[0] + augment.MEAN[0]).round().long()
        return Output([], torch.zeros(len(x), 1), nn.functional.one_hot(written, 2).float() * 10, None)


def test_mean_class_accuracy_counts_every_class_alike():
    """3 videos of class 0, all right; 1 of class 1, taken for 0: top-1 75 %, mean class accuracy 50 %."""
    labels, predicted = torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0])
    batch = {"rgb": predicted.to(torch.uint8).reshape(4, 1, 1, 1, 1, 1).expand(4, 1, 2, 4, 4, 3), "label": labels,
             "key": list("abcd")}
    found = evaluate(Writes(2), [batch], torch.device("cpu"), torch.autocast("cpu", enabled=False))
    assert (found["top1"], found["mean_class"]) == (75.0, 50.0) and found["confusion"].tolist() == [[3, 0], [1, 0]]


CLIPS = ("hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi", "kinetics400/using_segway/R6llTwEh07w_000000_000010.mp4")


def test_predict_video_gives_the_top_classes_of_real_clips(ltg_run, real_videos, tmp_path):
    videos = [real_videos / clip for clip in CLIPS]
    result = tgtrain("predict", "--ckpt", ltg_run / "best.pt", "--video", *videos, "--json", tmp_path / "top.json",
                     "--clips", 2)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{videos[0]}  (72 frames at 30 fps, 560x240)" and lines[4].startswith(f"{videos[1]}  (303 ")
    found = json.loads((tmp_path / "top.json").read_text())["videos"]
    assert [v["path"] for v in found] == [str(v) for v in videos]
    for video in found:
        shares = [top["probability"] for top in video["top5"]]
        assert sorted(top["class"] for top in video["top5"]) == CLASSES and shares == sorted(shares, reverse=True)
        assert sum(shares) == pytest.approx(1, abs=1e-5)


def test_a_video_file_scores_as_its_sample_in_the_shards(ltg_run, shards, tmp_path):
    """The same views of the same frames: the file's scores are its val sample's, but for the shards' JPEG step."""
    assert tgtrain("predict", "--ckpt", ltg_run / "best.pt", "--data", shards, "--out", tmp_path / "p.h5",
                   "--workers", 0).exit_code == 0
    with h5py.File(tmp_path / "p.h5") as h5:
        from_shards = dict(zip([k.decode() for k in h5["keys"][:]], h5["scores"][:]))
    root = Path(json.loads((shards / "dataset.json").read_text())["config"]["root"])
    files = [root / line.split()[0] for line in (shards / "manifests" / "val.txt").read_text().splitlines()]
    result = tgtrain("predict", "--ckpt", ltg_run / "best.pt", "--video", *files, "--json", tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    for video in json.loads((tmp_path / "v.json").read_text())["videos"]:
        path = Path(video["path"])  # keys: folder_CLASS_STEM-HASH
        key = next(k for k in from_shards if f"_{path.parent.name}_{path.stem}-" in k)
        scores = np.zeros(3)
        for top in video["top5"]:
            scores[top["label"]] = top["probability"]
        assert np.abs(scores - from_shards[key]).max() < 0.02, (video["path"], scores, from_shards[key])


def test_predict_video_bad_input_is_one_line(ltg_run, real_videos, tmp_path):
    ckpt = ltg_run / "best.pt"
    (tmp_path / "notes.mp4").write_text("not a video")
    for path, words in ((tmp_path / "notes.mp4", "not a video"), (tmp_path / "none.avi", "no such file"),
                        (tmp_path, "not a file")):
        assert_one_line_error(tgtrain("predict", "--ckpt", ckpt, "--video", path), path.name, words)
    assert_one_line_error(tgtrain("predict", "--ckpt", ckpt, "--video", real_videos / "other" / "corrupted.mp4"),
                          "corrupted.mp4")
    assert_one_line_error(tgtrain("predict", "--ckpt", ckpt, "--video"), "--video")
    older = with_config(ckpt, tmp_path / "older", input=None)
    assert_one_line_error(tgtrain("predict", "--ckpt", older, "--video", real_videos / CLIPS[0]), "short side")
    assert_one_line_error(tgtrain("predict", "--ckpt", tmp_path / "notes.mp4", "--video", real_videos / CLIPS[0]),
                          "not a readable tgtrain checkpoint")


# -- export ---------------------------------------------------------------------------------------------------

PLAIN = """\
import json, sys
import numpy as np, torch
files = {"classes.json": "", "README.txt": ""}
program = torch.export.load(sys.argv[1], extra_files=files)
logits = program.module()(torch.from_numpy(np.load(sys.argv[2])))
np.save(sys.argv[3], logits.detach().numpy())
example = program.example_inputs[0][0]
ours = [m for m in sys.modules if m.startswith(("tgtrain", "tgprep"))]
print(json.dumps({"classes": json.loads(files["classes.json"]), "example": [list(example.shape), str(example.dtype)],
                  "readme": files["README.txt"], "ours": ours}))
"""


def test_export_runs_without_tgtrain_and_gives_the_checkpoints_logits(ltg_run, tmp_path):
    result = tgtrain("export", "--ckpt", ltg_run / "best.pt", "--out", tmp_path / "model.pt2")
    assert result.exit_code == 0, result.output
    clips = torch.randint(0, 256, (3, 4, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "clips.npy", clips.numpy())
    (tmp_path / "plain.py").write_text(PLAIN)
    done = subprocess.run([sys.executable, tmp_path / "plain.py", tmp_path / "model.pt2", tmp_path / "clips.npy",
                           tmp_path / "logits.npy"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    told = json.loads(done.stdout)
    assert told["ours"] == [] and told["classes"] == CLASSES
    assert told["example"] == [[2, 4, 16, 16, 3], "torch.uint8"]  # the layout, kept in the file
    assert "(N, 4, 16, 16, 3)" in told["readme"] and told["readme"] in result.stdout
    net = trained_rgb(ltg_run / "best.pt")[0].eval()
    with torch.no_grad():
        expected = net(augment.normalize(clips)).logits
    assert np.allclose(np.load(tmp_path / "logits.npy"), expected.numpy(), atol=1e-5)
