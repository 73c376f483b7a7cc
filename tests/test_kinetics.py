"""Kinetics-400 end to end, as a user with the official CSVs runs it: build video shards of the real clips,
verify them, train an epoch on them. The real clips are all val clips, so the train CSV here lists two of them
(with the official columns) and the val CSV is the official one without those two."""

import csv
import json

from click.testing import CliRunner

from tgprep.cli import main as tgprep_main
from tgtrain.cli import main as tgtrain_main

TRAIN = ("R6llTwEh07w", "SOX5yA1l24A")


def split_csvs(real_annotations, folder):
    """kinetics-400_train.csv with the TRAIN clips, kinetics-400_val.csv with every other official val row."""
    with open(real_annotations / "kinetics400" / "kinetics-400_val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    folder.mkdir()
    for name, keep in (("train", lambda r: r["youtube_id"] in TRAIN), ("val", lambda r: r["youtube_id"] not in TRAIN)):
        with open(folder / f"kinetics-400_{name}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "split": name} for r in rows if keep(r))
    return folder


def test_kinetics_video_shards_build_verify_and_train(real_videos, real_annotations, tmp_path):
    annotations = split_csvs(real_annotations, tmp_path / "annotations")
    out = tmp_path / "k400"
    built = CliRunner().invoke(tgprep_main, [
        "build", "--dataset", "kinetics400", "--root", str(real_videos / "kinetics400"), "--annotations",
        str(annotations), "--ratio", "0.5", "--store", "video", "--short-side", "128", "--allow-missing",
        "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert json.loads((out / "dataset.json").read_text())["videos"] == {"labeled": 1, "unlabeled": 1, "val": 1}
    verified = CliRunner().invoke(tgprep_main, ["verify", str(out)])
    assert verified.exit_code == 0 and "all shards verified" in verified.output, verified.output
    trained = CliRunner().invoke(tgtrain_main, [
        "run", "--preset", "tiny", "--data", str(out), "--out", str(tmp_path / "run"), "--epochs", "1",
        "--set", "supervised_epochs=0", "--set", "batch_size=2"])
    assert trained.exit_code == 0, trained.output
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 1 and "val_top1" in last and "mask_rate" in last
