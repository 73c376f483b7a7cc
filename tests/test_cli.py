"""The tgprep command line as a user meets it: one-line errors with exit code 2, summaries, exit codes."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from tgprep.cli import main
from tgprep.video import encode_video
from tests.test_build import moving_bar


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]
    assert "Traceback" not in result.output


def test_datasets_lists_every_adapter():
    result = run("datasets")
    assert result.exit_code == 0
    for name in ("hmdb51", "ucf101", "kinetics400", "folder", "synthetic"):
        assert name in result.output


def test_unknown_dataset_and_bad_ratio(tmp_path):
    result = run("build", "--dataset", "hmdb52", "--root", tmp_path, "--ratio", "0.4", "--out", tmp_path / "o")
    assert result.exit_code == 2 and "hmdb52" in result.output
    (tmp_path / "c").mkdir()
    encode_video(tmp_path / "c" / "a.avi", moving_bar(4, 0), fps=8)
    encode_video(tmp_path / "c" / "b.avi", moving_bar(4, 1), fps=8)
    one_line_error(run("build", "--dataset", "folder", "--root", tmp_path, "--ratio", "1.5", "--out", tmp_path / "o"),
                   "--ratio")


def test_missing_root_and_missing_annotations(tmp_path):
    one_line_error(run("build", "--dataset", "hmdb51", "--root", tmp_path / "nope", "--ratio", "0.4",
                       "--out", tmp_path / "o"), "nope")
    one_line_error(run("build", "--dataset", "ucf101", "--root", tmp_path, "--ratio", "0.4", "--out", tmp_path / "o"),
                   "--annotations")


def test_malformed_split_line_names_file_and_line(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for k in (1, 2, 3):
        (splits / f"wave_test_split{k}.txt").write_text("a.avi 1 \nthis line is wrong\n")
    one_line_error(run("build", "--dataset", "hmdb51", "--root", tmp_path, "--ratio", "0.4", "--out", tmp_path / "o"),
                   "wave_test_split1.txt", "2")


def test_missing_videos_name_the_flag(real_videos, real_annotations, tmp_path):
    one_line_error(run("build", "--dataset", "hmdb51", "--root", real_videos, "--annotations", real_annotations,
                       "--ratio", "0.4", "--out", tmp_path), "--allow-missing", "missing.txt")


def test_dry_run_on_real_hmdb_clips_prints_the_counts(real_videos, real_annotations, tmp_path):
    result = run("build", "--dataset", "hmdb51", "--root", real_videos, "--annotations", real_annotations,
                 "--ratio", "0.4", "--allow-missing", "--dry-run", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "4 of 6766 listed videos found" in result.output
    empty = next(line for line in result.output.splitlines() if "classes have no video left" in line)
    assert empty.startswith("warning: 49 classes") and "brush_hair" in empty and "wave" not in empty
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines() if line.split()}
    assert rows["labeled"][0] == "2" and rows["unlabeled"][0] == "1" and rows["val"][0] == "1"
    assert (tmp_path / "manifests" / "val.txt").read_text() == "hmdb51/wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi 50\n"  # relative to --root
    assert not list(tmp_path.glob("*.tar"))


def test_strict_exits_1_when_a_video_failed(tmp_path):
    root = tmp_path / "videos"
    (root / "c").mkdir(parents=True)
    for i in range(3):
        encode_video(root / "c" / f"v{i}.avi", moving_bar(6, i), fps=8)
    (root / "c" / "broken.avi").write_bytes(b"\0" * 100)
    args = ["build", "--dataset", "folder", "--root", root, "--ratio", "1", "--workers", "1"]
    relaxed = run(*args, "--out", tmp_path / "a")
    assert relaxed.exit_code == 0 and "1 of 4 videos failed (see failures.jsonl)" in relaxed.output
    assert run(*args, "--out", tmp_path / "b", "--strict").exit_code == 1


def test_synth_then_inspect_and_verify(tmp_path):
    result = run("synth", "--out", tmp_path / "syn", "--classes", "2", "--videos-per-class", "3", "--frames", "6",
                 "--width", "64", "--height", "48")
    assert result.exit_code == 0, result.output
    assert run("build", "--dataset", "synthetic", "--root", tmp_path / "syn", "--ratio", "0.5",
               "--out", tmp_path / "out").exit_code == 0
    shown = run("inspect", tmp_path / "out")
    assert shown.exit_code == 0 and "labeled" in shown.output
    one_line_error(run("inspect", tmp_path / "out", "--png", tmp_path / "s.png"), "--key")
    assert run("inspect", tmp_path / "out", "--random", "1", "--png", tmp_path / "s.png").exit_code == 0
    assert Path(tmp_path / "s.png").stat().st_size > 1000
    assert run("verify", tmp_path / "out").exit_code == 0
    tar = sorted((tmp_path / "out").glob("val-*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:-2048])
    assert run("verify", tmp_path / "out").exit_code == 1


@pytest.mark.parametrize("command", ["build", "synth", "inspect", "verify", "datasets"])
def test_help_teaches(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and len(result.output.splitlines()) > 3
