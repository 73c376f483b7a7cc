"""Shards anywhere, end to end, against moto's S3 server and a web server on 127.0.0.1: a build into a bucket holds
a local build's bytes and survives kill -9 mid-upload, verify and inspect read URLs, training from a bucket or a web
server sees the local folder's batches byte for byte (two gloo ranks too), webdataset reads the served shards,
and resume rewrites a shard that no longer matches its sidecar, locally and in a bucket."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.test_build import moving_bar
from tests.test_engine import assert_same_tensors, micro, state_dict_of, two_ranks
from tgprep.build import build
from tgprep.cli import main as tgprep
from tgprep.config import BuildConfig
from tgprep.storage.cache import ShardCache
from tgprep.storage.index import Storage
from tgprep.verification import verify
from tgprep.video import encode_video
from tgtrain.cli import main as tgtrain
from tgtrain.data import loader, train_stream
from tgtrain.engine import train
from tgtrain.shards import Data

fsspec = pytest.importorskip("fsspec")  # the remote extra
CLASSES = ["jump", "run", "wave"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    for c, name in enumerate(CLASSES):
        (root / name).mkdir()
        for i in range(6):
            encode_video(root / name / f"v{i}.avi", moving_bar(12, seed=10 * c + i, size=(32, 24)), fps=25)
    return root


def settings(videos, out, **changes) -> BuildConfig:
    return BuildConfig(**{**dict(dataset="folder", root=str(videos), out=str(out), ratio=0.5, val_fraction=0.3,
                                 videos_per_shard=4, short_side=0, workers=1), **changes})


@pytest.fixture(scope="module")
def local(videos, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    build(settings(videos, out))
    return out


@pytest.fixture(scope="module")
def bucket(s3, videos, tmp_path_factory) -> str:
    url = s3.bucket() + "/h"
    build(settings(videos, url, stage=str(tmp_path_factory.mktemp("stage"))))
    return url


@pytest.fixture(scope="module")
def served(web, local) -> str:
    """The local build, served over HTTP."""
    shutil.copytree(local, web.folder / "h", dirs_exist_ok=True)
    return f"{web.url}/h/"


def built_files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".lock")


def objects(url: str) -> dict[str, bytes]:
    fs, key = fsspec.filesystem("s3"), url.removeprefix("s3://")
    fs.invalidate_cache()
    return {name[len(key) + 1:]: fs.cat_file(name) for name in fs.find(key)}


def same_build(found: dict[str, bytes], local) -> None:
    """Every file of the local build, byte for byte (dataset.json but for where it was written)."""
    assert sorted(found) == built_files(local)
    for name in set(found) - {"dataset.json"}:
        assert found[name] == (local / name).read_bytes(), name
    mine, theirs = json.loads(found["dataset.json"]), json.loads((local / "dataset.json").read_text())
    for meta in (mine, theirs):
        meta["config"].pop("out"), meta.pop("command")
    assert mine == theirs


def test_a_bucket_build_holds_the_bytes_of_a_local_build(bucket, local):
    same_build(objects(bucket), local)


def test_verify_and_inspect_read_a_bucket_and_a_web_server(bucket, served, tmp_path):
    for url in (bucket, served):
        result = CliRunner().invoke(tgprep, ["verify", url, "--cache", str(tmp_path / "cache")])
        assert result.exit_code == 0 and "all shards verified" in result.output, result.output
        result = CliRunner().invoke(tgprep, ["inspect", url.rstrip("/") + "/val", "--cache", str(tmp_path / "cache")])
        assert result.exit_code == 0 and result.output.startswith("set ") and "\nval " in result.output, result.output


def test_a_build_killed_during_an_upload_finishes_when_run_again(s3, videos, local, tmp_path):
    url = s3.bucket() + "/k"
    command = [sys.executable, "-m", "tgprep.cli", "build", "--dataset", "folder", "--root", str(videos), "--ratio",
               "0.5", "--val-fraction", "0.3", "--videos-per-shard", "4", "--short-side", "0", "--workers", "1",
               "--out", url, "--stage", str(tmp_path / "stage")]
    s3.hold(let_through=2)
    build_run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert s3.held.wait(60), "the build never reached its third upload"
    finally:
        os.killpg(build_run.pid, signal.SIGKILL)
        build_run.wait()
        s3.holding = False
        s3.release.set()
    assert s3.answered.wait(20)
    found = objects(url)
    tars = sorted(n for n in found if n.endswith(".tar"))
    assert sum(n[:-4] + ".json" in found for n in tars) == 2  # two finished shards
    assert all(found[n] == (local / n).read_bytes() for n in tars)  # and nothing partial under a final name
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "(2 from an earlier run)" in again.stdout, again.stdout + again.stderr
    same_build(objects(url), local)


def batches(data: Data, workers: int) -> list[dict]:
    stream = train_stream(data.shards("labeled"), batch_size=3, clip_len=4, interval=2, size=16, reduce=1,
                          labeled=True, epoch_batches=3, seed=0, shuffle=4, classes=len(CLASSES))
    batches = loader(stream, workers)
    return [batch for _ in range(2) for batch in batches]  # two passes, as two epochs


def test_training_batches_from_a_bucket_or_a_web_server_are_the_local_ones(bucket, served, local, web, tmp_path):
    reference = batches(Data(local), workers=1)
    web.reset()
    for url in (bucket, served):
        got = batches(Data(url, Storage(cache=str(tmp_path / "cache"))), workers=1)
        assert len(got) == len(reference) == 6
        for mine, theirs in zip(got, reference):
            assert mine["key"] == theirs["key"]
            assert all(torch.equal(mine[k], theirs[k]) for k in ("rgb", "tg", "label"))
    assert web.gets and set(web.gets.values()) == {1} | ({2} if web.gets["h/dataset.json"] == 2 else set())
    assert all(n == 1 for name, n in web.gets.items() if name.endswith(".tar"))  # each shard fetched once


def test_tgtrain_run_from_a_bucket_ends_where_the_local_run_does(bucket, local, tmp_path):
    train(micro(local, tmp_path / "local", "supervised"))
    config = tmp_path / "micro.toml"
    config.write_text((tmp_path / "local" / "config.toml").read_text().replace(str(local), bucket))
    result = CliRunner().invoke(tgtrain, ["run", "--config", str(config), "--data", bucket, "--out",
                                          str(tmp_path / "remote"), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert_same_tensors(state_dict_of(tmp_path / "local" / "last.pt"), state_dict_of(tmp_path / "remote" / "last.pt"))


def test_two_gloo_ranks_on_a_web_server_take_the_same_steps(served, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the ranks' default cache, shared
    rank0, rank1 = two_ranks(micro(served, tmp_path / "run", "supervised"), tmp_path)
    assert_same_tensors(rank0, rank1)  # a rank that took another number of steps would have hung both


def test_webdataset_reads_the_served_shards(served, local):
    import webdataset as wds

    sidecars = [json.loads(p.read_text()) for p in sorted(local.glob("labeled-*.json"))]
    urls = [f"{served}{s['shard']}" for s in sidecars]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == [k for s in sidecars for k in s["keys"]]
    assert all({"json", "rgb", "tg", "cls"} <= set(s) for s in samples)


def test_a_shard_that_fails_its_check_in_a_loader_worker_is_one_line(served, web, tmp_path):
    shard = json.loads((web.folder / "h" / "dataset.json").read_text())["shards"][0]["shard"]
    web.fail(f"h/{shard}", *["flip"] * 4)
    result = CliRunner().invoke(tgtrain, ["run", "--preset", "tiny", "--data", served, "--out", str(tmp_path / "r"),
                                          "--workers", "1", "--cache", str(tmp_path / "cache")])
    web.reset()
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert f"{served}{shard}: sha256" in lines[0] and "tgprep build" in lines[0]


def overwrite_a_member(tar_path) -> None:
    """Random bytes over the first .rgb member, the file's size unchanged (a hostile trial's damage)."""
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar if m.name.endswith(".rgb"))
    with open(tar_path, "r+b") as f:
        f.seek(member.offset_data)
        f.write(np.random.default_rng(0).integers(0, 256, member.size, dtype=np.uint8).tobytes())


def test_resume_rewrites_a_shard_that_no_longer_matches_its_sidecar(videos, local, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(local, out)
    overwrite_a_member(out / "labeled-000000.tar")
    shards = len(list(local.glob("*.tar")))
    kept = build(settings(videos, out, resume_check="size"))  # the size alone cannot see it
    assert kept.resumed == shards and verify(out)
    capsys.readouterr()
    again = build(settings(videos, out))
    assert again.resumed == shards - 1 and "labeled-000000.tar does not match its sidecar (sha256)" in capsys.readouterr().err
    assert (out / "labeled-000000.tar").read_bytes() == (local / "labeled-000000.tar").read_bytes()
    assert verify(out) == []


def test_resume_rewrites_a_bucket_shard_that_no_longer_matches(bucket, videos, local, tmp_path):
    fs, name = fsspec.filesystem("s3"), bucket.removeprefix("s3://") + "/val-000000.tar"
    fs.put_file(str(local / "val-000000.tar"), name)
    copy = tmp_path / "damaged.tar"
    shutil.copy(local / "val-000000.tar", copy)
    overwrite_a_member(copy)
    fs.put_file(str(copy), name)
    again = build(settings(videos, bucket, stage=str(tmp_path / "stage")))
    assert again.resumed == len(list(local.glob("*.tar"))) - 1
    assert fs.cat_file(name) == (local / "val-000000.tar").read_bytes()


def test_the_cache_stays_within_its_limit_plus_one_shard(served, local, web, tmp_path):
    largest = max(p.stat().st_size for p in local.glob("*.tar"))
    data = Data(served, Storage(cache=str(tmp_path / "cache"), cache_limit=str(2 * largest)))
    stream = train_stream(data.shards("labeled") + data.shards("unlabeled"), batch_size=2, clip_len=2, interval=1,
                          size=16, reduce=1, labeled=False, epoch_batches=30, seed=0, shuffle=1)
    cache: ShardCache = data.cache
    for _ in stream:
        assert cache.used() <= cache.limit + largest
    assert len(list((tmp_path / "cache").glob("*.tar"))) <= 3
    with pytest.raises(Exception, match="cannot hold"):
        data.check_cache(streams=3, workers=4, shuffle=256)
