"""Real HMDB-51 clips of odd widths (560x240, 432x240, 320x240) built at short sides 0, 128 and 100: every sample
verifies, the contact sheet draws, the trainer decodes them at reduce 2 and 4, and `tgtrain run` trains on them."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_engine import one_thread  # noqa: F401  (autouse: one torch thread, as test_engine runs)
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.inspection import contact_sheet
from tgprep.sample import read_meta
from tgprep.verification import verify
from tgtrain.cli import main
from tgtrain.clips import choose_reduce
from tgtrain.data import shard_urls, tar_samples, train_stream

CLIPS = ["wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi", "wave/TrumanShow_wave_f_nm_np1_fr_med_26.avi",
         "wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
         "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"]
SHORT_SIDES = (0, 128, 100)


@pytest.fixture(scope="module")
def builds(real_videos, tmp_path_factory) -> dict[int, Path]:
    """short side -> the output of `tgprep build` of the four clips as a folder dataset."""
    root = tmp_path_factory.mktemp("hmdb")
    for clip in CLIPS:
        (root / Path(clip).parent).mkdir(exist_ok=True)
        (root / clip).symlink_to(real_videos / "hmdb51" / clip)
    outs = {}
    for short_side in SHORT_SIDES:
        outs[short_side] = tmp_path_factory.mktemp(f"short{short_side}")
        build(BuildConfig(dataset="folder", root=str(root), out=str(outs[short_side]), ratio=0.5, val_fraction=0.3,
                          videos_per_shard=2, short_side=short_side, workers=1))
    return outs


def stored_sizes(out: Path) -> list[tuple[int, int]]:
    """(width, height) of every sample of every shard."""
    shards = ({"url": str(tar)} for tar in sorted(out.glob("*.tar")))
    return sorted((meta["width"], meta["height"]) for meta in map(read_meta, tar_samples(shards)))


@pytest.mark.parametrize("short_side", SHORT_SIDES)
def test_every_sample_verifies_and_draws(builds, short_side, tmp_path):
    out = builds[short_side]
    expected = {0: [(320, 240), (320, 240), (432, 240), (560, 240)],
                128: [(171, 128), (171, 128), (230, 128), (299, 128)],
                100: [(133, 100), (133, 100), (180, 100), (233, 100)]}[short_side]
    assert stored_sizes(out) == expected  # every clip is in a shard, at the odd sizes
    assert verify(out) == []
    sheet = contact_sheet([*out.glob("*.tar")], random_n=4, frames=3)  # decodes at reduce 2 for 240p frames
    sheet.save(tmp_path / "sheet.png")
    assert sheet.width > 0 and sheet.height > 0


@pytest.mark.parametrize("short_side, size", [(128, 64), (128, 32), (100, 50), (100, 25)])
def test_the_trainer_decodes_odd_widths_reduced(builds, short_side, size):
    assert choose_reduce(short_side, size) in (2, 4)
    urls = shard_urls(builds[short_side], "labeled") + shard_urls(builds[short_side], "unlabeled")
    for batch in train_stream(urls, batch_size=4, clip_len=4, interval=8, size=size, labeled=False,
                              epoch_batches=2, seed=0):
        assert batch["rgb"].shape == batch["tg"].shape == (4, 4, size, size, 3)
        assert batch["rgb"].float().std() > 10  # real pictures, not a fill


@pytest.mark.parametrize("size, load_size", [(48, 50), (24, 25)])  # reduce 2, then 4, of the 100-pixel side
def test_tgtrain_run_trains_an_epoch_on_them(builds, size, load_size, tmp_path):
    assert {choose_reduce(100, size), choose_reduce(100, load_size)} == {2 if size == 48 else 4}
    settings = tmp_path / "sizes.toml"
    settings.write_text(f"size = {size}\nload_size = {load_size}\nclip_len = 4\nbatch_size = 2\nsupervised_epochs = 0\n")
    result = CliRunner().invoke(main, ["run", "--preset", "tiny", "--config", str(settings), "--data", str(builds[100]),
                                       "--out", str(tmp_path / "run"), "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and np.isfinite(record["loss"]) and "val_top1" in record
