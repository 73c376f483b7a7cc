"""The trainer tests' shared material: micro shards, the micro model's settings, and one finished micro LTG run.

conftest.py registers the two fixtures for the whole session, so the modules that test the trainer and what comes
after training share one build and one run.
"""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.test_build import moving_bar
from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.video import encode_video
from tgtrain.cli import main
from tgtrain.config import make_config, to_toml

CLASSES = ["jump", "run", "wave"]
# A model of a few thousand parameters on 16x16 clips of 4 frames: an epoch takes well under a second.
MICRO = dict(width=4, blocks=(1, 1, 1, 1), proj_dim=8, size=16, load_size=16, clip_len=4, frame_interval=2,
             batch_size=4, epochs=2, workers=0, warmup_epochs=1, supervised_epochs=1)


def micro(data: Path, out: Path, method: str = "ltg", **changes):
    return make_config("tiny", data=str(data), out=str(out), method=method, **{**MICRO, **changes})


def tgtrain(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_torch_thread():
    """One torch thread: on two shared cores, more threads wait on each other (see engine.share_cpu)."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # engine.share_cpu then leaves the thread count alone
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """3 classes x 6 videos of 12 frames, 4 videos per shard: labeled, unlabeled and val each hold 6 videos,
    in shards of 4 and 2 samples, so two ranks get uneven shards. The videos are in videos/ beside it."""
    root, out = tmp_path_factory.mktemp("videos"), tmp_path_factory.mktemp("shards")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(6):
            encode_video(root / name / f"v{i}.avi", moving_bar(12, seed=10 * c + i, size=(32, 24)), fps=25)
    build(BuildConfig(dataset="folder", root=str(root), out=str(out), ratio=0.5, val_fraction=0.3,
                      videos_per_shard=4, short_side=0, workers=1))
    sizes = {p.name: json.loads(p.read_text())["samples"] for p in out.glob("*-0*.json")}
    assert sorted(sizes.values()) == [2, 2, 2, 4, 4, 4], sizes
    return out


@pytest.fixture(scope="session")
def ltg_run(shards, tmp_path_factory) -> Path:
    """A finished `tgtrain run --method ltg` of the micro model, its settings given as a --config file."""
    folder = tmp_path_factory.mktemp("run")
    settings = folder / "micro.toml"
    settings.write_text(to_toml(micro(shards, folder / "ltg")))
    for _ in one_torch_thread():
        result = tgtrain("run", "--preset", "tiny", "--config", settings, "--data", shards, "--out", folder / "ltg",
                         "--method", "ltg")
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.startswith("ltg: best val top-1 ")
    return folder / "ltg"
