"""Settings as a user meets them: the dataset presets against the reference configs, `tgtrain config`, --set and
--config round trips, and one line with exit code 2 for every bad value, from a flag, a file or a checkpoint."""

import tomllib
from dataclasses import asdict

import pytest
import torch
from click.testing import CliRunner

from tgtrain.checkpoint import KEYS
from tgtrain.cli import main
from tgtrain.config import PRESETS, RECIPE, TrainConfig, make_config, resolve_config, stored_config, to_toml


def tgtrain(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


# The reference configs' values (lambert-x/video-semisup): configs/compare_hmdb51/*360e*40percent*,
# configs/ucf101_main/*180e*, configs/k400-fixmatch-tg-alignment-videos-ptv-simclr/8gpu/*90e*10percent*.
SHARED = dict(lr=0.2, momentum=0.9, weight_decay=1e-4, clip_grad=40.0, warmup_start=0.1, threshold=0.3, width=64,
              blocks=[2, 2, 2, 2], clip_len=8, frame_interval=8, size=224, load_size=256, precise_bn_every=5,
              eval_every=5, test_views="full", test_clips=10, test_crops=3, sync_bn=True, warmup_strong=True)
REFERENCE = {
    "hmdb51": dict(SHARED, epochs=360, warmup_epochs=60, supervised_epochs=60, batch_size=5, lr_clips=80,
                   precise_bn_batches=120),
    "ucf101": dict(SHARED, epochs=180, warmup_epochs=30, supervised_epochs=30, batch_size=5, lr_clips=80,
                   precise_bn_batches=200),
    "kinetics400": dict(SHARED, epochs=90, warmup_epochs=15, supervised_epochs=15, batch_size=8, lr_clips=128,
                        precise_bn_batches=200),
}


@pytest.mark.parametrize("preset", REFERENCE)
def test_config_prints_the_reference_values_of_each_dataset_preset(preset):
    result = tgtrain("config", "--preset", preset)
    assert result.exit_code == 0, result.output
    printed = tomllib.loads(result.stdout)
    assert {k: printed[k] for k in REFERENCE[preset]} == REFERENCE[preset]
    assert printed["preset"] == preset


def test_every_preset_sets_the_whole_recipe_and_r3d18_is_hmdb51():
    for name, values in PRESETS.items():
        assert set(RECIPE) <= set(values), (name, set(RECIPE) - set(values))
    assert make_config("r3d18") == make_config("hmdb51") == make_config()
    tiny = make_config("tiny")
    assert (tiny.test_views, tiny.width, tiny.size, tiny.epochs, tiny.supervised_epochs) == ("center", 32, 40, 24, 8)


def test_config_output_reads_back_with_config_and_set_is_typed_from_the_fields(tmp_path):
    settings = ["epochs=100", "lr=1", "blocks=1,1,2,1", "sync_bn=false", "test_views=center", 'out="runs/a b"',
                "crop_area=0.5"]
    result = tgtrain("config", "--preset", "ucf101", *[a for s in settings for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    file = tmp_path / "ucf.toml"
    file.write_text(result.stdout)
    config = make_config(file=str(file))  # the file names its preset
    assert config == make_config("ucf101", settings=settings)
    assert (config.epochs, config.lr, config.blocks, config.sync_bn, config.test_views, config.out) == (
        100, 1.0, (1, 1, 2, 1), False, "center", "runs/a b")
    assert config.supervised_epochs == 17 and config.preset == "ucf101"  # 30 of 180, scaled to 100 epochs
    again = tgtrain("config", "--config", file)
    assert again.exit_code == 0 and again.stdout == result.stdout
    # a run's config.toml is the same format; the shortcut flags still apply over --set
    assert make_config(file=str(file), settings=["epochs=70"], epochs=90).epochs == 90


@pytest.mark.parametrize("preset, settings, flags, schedule, noted", [
    ("tiny", ["epochs=2"], {}, (0, 1), True),  # 1/24 and 8/24 of 2, rounded
    ("tiny", [], {"epochs": 1}, (0, 0), True),
    ("hmdb51", [], {"epochs": 3}, (1, 1), True),  # 60/360 of 3 is a half: rounded up
    ("tiny", ["epochs=100"], {}, (4, 33), True),
    ("tiny", ["supervised_epochs=2"], {"epochs": 6}, (0, 2), True),  # the one given stays
    ("tiny", ["epochs=24"], {}, (1, 8), False),  # the preset's own: nothing to scale
    ("tiny", ["warmup_epochs=3"], {}, (3, 8), False),  # no epochs given: nothing scales
])
def test_epochs_given_alone_scale_the_warm_up_and_supervised_epochs(preset, settings, flags, schedule, noted):
    config, note = resolve_config(preset, settings=settings, **flags)
    assert (config.warmup_epochs, config.supervised_epochs) == schedule and (note is not None) == noted


def test_the_note_says_the_values_used_and_a_contradiction_is_one_line(tmp_path):
    result = tgtrain("config", "--preset", "tiny", "--set", "epochs=2")
    assert result.exit_code == 0 and result.stderr == (
        "note: epochs 2: warm-up 0, supervised 1 (the tiny preset's 1/24 and 8/24 of its 24)\n")
    printed = tomllib.loads(result.stdout)
    assert (printed["epochs"], printed["warmup_epochs"], printed["supervised_epochs"]) == (2, 0, 1)
    one = tgtrain("config", "--preset", "tiny", "--set", "epochs=2", "--set", "warmup_epochs=1")
    assert one.stderr == "note: epochs 2: supervised 1 (the tiny preset's 8/24 of its 24)\n"
    assert_one_line_error(tgtrain("config", "--preset", "tiny", "--set", "epochs=2", "--set", "supervised_epochs=5"),
                          "supervised_epochs 5 is more than epochs 2", "leave it out")
    # a file that sets the schedule keeps it; one that sets epochs alone scales it
    file = tmp_path / "tiny.toml"
    file.write_text(tgtrain("config", "--preset", "tiny").stdout)
    assert_one_line_error(tgtrain("config", "--config", file, "--set", "epochs=4"), "supervised_epochs 8")
    file.write_text('preset = "tiny"\nepochs = 12\n')
    assert (make_config(file=str(file)).warmup_epochs, make_config(file=str(file)).supervised_epochs) == (1, 4)


def test_config_leaves_data_for_the_run_to_give():
    """An unset data folder is a comment, not `data = ""`, and reads back as unset."""
    printed = tgtrain("config", "--preset", "tiny").stdout
    assert 'data = ""' not in printed and "# data = " in printed and "data" not in tomllib.loads(printed)


@pytest.mark.parametrize("setting, words", [
    ("widht=4", ["widht", "unknown"]),
    ("epochs", ["key=value"]),
    ("epochs=ten", ["epochs", "whole number"]),
    ("width=2.5", ["width", "whole number"]),
    ("sync_bn=yes", ["sync_bn", "true or false"]),
    ("blocks=[1, 1]", ["blocks", "4 numbers"]),
    ("epochs=0", ["epochs 0", "at least 1"]),
    ("threshold=0", ["threshold", "above 0"]),
    ("threshold=1.5", ["threshold", "at most 1"]),
    ("lr=nan", ["lr nan"]),
    ("warmup_epochs=400", ["warmup_epochs 400", "epochs 360"]),
    ("size=300", ["size 300", "load_size 256"]),
    ("width=1000000", ["width 1000000"]),
    ("blocks=10000000,1,1,1", ["blocks"]),
    ("width=1024", ["width 1024", "parameters"]),
    ("test_views=wide", ["test_views", "full, center"]),
    ("method=mixmatch", ["method", "ltg"]),
])
def test_a_bad_setting_is_one_line(setting, words):
    assert_one_line_error(tgtrain("config", "--set", setting), *words)


def test_bad_values_in_a_file_and_on_run_are_one_line(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text('epochs = "many"\n')
    assert_one_line_error(tgtrain("config", "--config", file), "bad.toml", "epochs", "whole number")
    for text in ("epochs = [\n", "blocks = " + "[" * 10**5 + "]" * 10**5, "x" * (2 << 20)):
        file.write_text(text)
        assert_one_line_error(tgtrain("config", "--config", file), "bad.toml", "cannot read")
    assert_one_line_error(tgtrain("run", "--data", tmp_path, "--set", "eval_every=0"), "eval_every 0")


@pytest.mark.parametrize("change, words", [
    (dict(width=10**6), ["its stored config", "width 1000000"]),
    (dict(blocks=(10**7, 1, 1, 1)), ["its stored config", "blocks"]),
    (dict(clip_len="8"), ["its stored config", "clip_len", "whole number"]),
    (dict(bogus=1), ["its stored config", "bogus"]),
])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_checkpoint_asking_for_an_absurd_model_is_one_line_before_any_model(tmp_path, change, words, command):
    """Checked before the model is built: a network of 10^6 channels would take terabytes."""
    checkpoint = {key: None for key in KEYS}
    checkpoint.update(model={}, optimizer={}, classes=["a", "b"], epoch=1, best=0.0, best_epoch=1,
                      config={**asdict(make_config("tiny")), **change})
    torch.save(checkpoint, tmp_path / "best.pt")
    more = ["--out", tmp_path / "p.h5"] if command == "predict" else []
    result = tgtrain(command, "--ckpt", tmp_path / "best.pt", "--data", tmp_path, *more)
    assert_one_line_error(result, "best.pt", *words)


def test_a_stored_config_without_the_newer_fields_takes_them_from_its_own_preset():
    """A checkpoint written before a field existed (here test_views and PreciseBN's) gets its preset's values."""
    old = {k: v for k, v in asdict(make_config("tiny", epochs=30)).items()
           if k not in ("test_views", "precise_bn_batches")}
    assert stored_config(old, "") == make_config("tiny", epochs=30)
    assert stored_config({**old, "preset": "r3d18"}, "").test_views == "full"  # hmdb51's earlier name


def test_to_toml_escapes_text_as_toml():
    config = TrainConfig(out='runs/"quoted"\\back\nline', data="ümlaut")
    assert tomllib.loads(to_toml(config))["out"] == config.out and tomllib.loads(to_toml(config))["data"] == "ümlaut"
