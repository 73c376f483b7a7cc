"""tgprep build end to end with real ffmpeg and real tars: completeness, determinism, resume, locking."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from tgprep.build import build, output_lock
from tgprep.config import BuildConfig
from tgprep.errors import MissingVideosError, UserError
from tgprep.video import encode_video


def moving_bar(frames: int, seed: int, size=(64, 48)) -> np.ndarray:
    """A bright bar sliding over a noisy background: cheap to encode, never two equal frames."""
    w, h = size
    rng = np.random.default_rng(seed)
    video = np.repeat(rng.integers(0, 80, (1, h, w, 3), dtype=np.uint8), frames, axis=0)
    for t in range(frames):
        x = (seed * 7 + 2 * t) % (w - 8)
        video[t, :, x:x + 8] = 230
    return video


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory) -> Path:
    """root/<class>/<video>: 3 classes x 4 videos, one name with awkward characters, one non-video."""
    root = tmp_path_factory.mktemp("folder")
    for c, name in enumerate(["jump", "run fast", "wave"]):
        (root / name).mkdir()
        for i in range(4):
            stem = f"v{i} (take #{i}) & more" if (c, i) == (1, 0) else f"v{i}"
            encode_video(root / name / f"{stem}.avi", moving_bar(20 + 5 * i, seed=10 * c + i), fps=25)
    (root / "wave" / "not_a_video.avi").write_text("this is text, not a video")
    return root


def config(root: Path, out: Path, **changes) -> BuildConfig:
    values = dict(dataset="folder", root=str(root), out=str(out), ratio=0.5, val_fraction=0.25,
                  videos_per_shard=2, short_side=0, workers=1)
    return BuildConfig(**{**values, **changes})


def tar_members(out: Path) -> dict[str, str]:
    """Every sample member of every shard: name -> sha256 of its bytes."""
    found = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                found[member.name] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
    return found


def sample_frames(out: Path) -> dict[str, int]:
    """key -> RGB frame count, from each sample's .json in the shards."""
    found = {}
    for tar_path in out.glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    found[member.name[:-5]] = json.loads(tar.extractfile(member).read())["frames"]
    return found


def test_dry_run_writes_manifests_and_no_shards(folder_dataset, tmp_path):
    report = build(config(folder_dataset, tmp_path, dry_run=True))
    assert not list(tmp_path.glob("*.tar"))
    lines = {name: (tmp_path / "manifests" / f"{name}.txt").read_text().splitlines()
             for name in ("labeled", "unlabeled", "val")}
    assert sum(len(v) for v in lines.values()) == 13
    assert len(lines["val"]) == 3  # one of four per class
    assert "run fast/v0 (take #0) & more.avi 1" in sum(lines.values(), [])
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["status"] == "planned" and meta["classes"] == ["jump", "run fast", "wave"]
    assert meta["videos"] == {"labeled": len(report.splits.labeled), "unlabeled": len(report.splits.unlabeled), "val": 3}


def test_every_video_lands_in_exactly_one_shard_or_in_failures(folder_dataset, tmp_path):
    report = build(config(folder_dataset, tmp_path))
    keys = [k for s in report.sidecars for k in s["keys"]]
    failures = [json.loads(line) for line in (tmp_path / "failures.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12
    assert [f["path"] for f in failures] == ["wave/not_a_video.avi"]
    assert failures[0]["reason"]
    every = {r.key for s in (report.splits.labeled, report.splits.unlabeled, report.splits.val) for r in s}
    assert set(keys) | {f["key"] for f in failures} == every
    for sidecar in report.sidecars:  # the sidecar tells the truth about its tar
        tar_path = tmp_path / sidecar["shard"]
        assert sidecar["bytes"] == tar_path.stat().st_size
        assert sidecar["sha256"] == hashlib.sha256(tar_path.read_bytes()).hexdigest()
    assert json.loads((tmp_path / "dataset.json").read_text())["status"] == "complete"


def test_frames_larger_than_the_readers_take_are_a_failure_not_a_sample(tmp_path):
    root = tmp_path / "root"
    (root / "big").mkdir(parents=True)
    encode_video(root / "big" / "huge.avi", np.zeros((3, 1450, 2900, 3), np.uint8), fps=25)  # 4.2 MP, just over
    build(config(root, tmp_path / "out", ratio=1.0, val_fraction=0.0))
    failure, = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert failure["reason"].startswith("frames of 2900x1450 are over the readers' limit")
    assert "--short-side" in failure["reason"]


def test_webdataset_reads_the_shards_as_written(folder_dataset, tmp_path):
    """Standard WebDataset tars: webdataset's own pipeline (no decoding) groups them into our samples."""
    import webdataset as wds

    report = build(config(folder_dataset, tmp_path))
    urls = [str(tmp_path / s["shard"]) for s in report.sidecars]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in samples) == sorted(k for s in report.sidecars for k in s["keys"])
    for sample in samples:
        meta = json.loads(sample["json"])
        assert {"json", "rgb", "tg"} <= set(sample) and len(sample["rgb"]) == meta["rgb_offsets"][-1]
        assert ("cls" in sample) == (meta["split"] == "val" or sample["__key__"] in
                                     {r.key for r in report.splits.labeled})


def test_shards_are_byte_identical_whatever_the_workers(folder_dataset, tmp_path):
    build(config(folder_dataset, tmp_path / "one", workers=1))
    build(config(folder_dataset, tmp_path / "two", workers=2))
    one, two = sorted((tmp_path / "one").glob("*.tar")), sorted((tmp_path / "two").glob("*.tar"))
    assert [p.name for p in one] == [p.name for p in two] and len(one) >= 4
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))


def test_rerun_resumes_and_other_settings_are_refused(folder_dataset, tmp_path):
    first = build(config(folder_dataset, tmp_path))
    again = build(config(folder_dataset, tmp_path))
    assert again.resumed == len(first.sidecars) and again.frames_written == 0
    with pytest.raises(UserError, match="ratio=0.5"):
        build(config(folder_dataset, tmp_path, ratio=0.25))
    replaced = build(config(folder_dataset, tmp_path, ratio=0.25, overwrite=True))
    assert replaced.resumed == 0
    assert json.loads((tmp_path / "dataset.json").read_text())["config"]["ratio"] == 0.25


def test_sidecars_that_are_not_sidecars_get_their_shards_written_again(folder_dataset, tmp_path):
    first = build(config(folder_dataset, tmp_path))
    tars = {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")}
    sidecars = sorted(tmp_path.glob("*-000000.json"))
    for side, junk in zip(sidecars, ("[1, 2]", '{"keys": 5, "failures": []}', '{"keys": [[1]], "failures": []}')):
        side.write_text(junk)
    again = build(config(folder_dataset, tmp_path))
    assert again.resumed == len(first.sidecars) - min(3, len(sidecars)) and len(sidecars) >= 2
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.tar")} == tars


def test_a_second_build_into_the_same_output_is_refused(folder_dataset, tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(UserError, match="another tgprep build"):
            build(config(folder_dataset, tmp_path))


def test_a_build_killed_at_ten_random_moments_ends_byte_identical(tmp_path):
    """SIGKILL to the whole build (parent and workers) at 10 seeded moments of its course, a rerun after each:
    every finished shard is always the reference's, and the last run completes it without a stray file."""
    root = tmp_path / "videos"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(12):
            encode_video(root / f"c{c}" / f"v{i}.avi", moving_bar(320, seed=c * 20 + i, size=(427, 240)), fps=25)
    command = [sys.executable, "-m", "tgprep.cli", "build", "--dataset", "folder", "--root", str(root),
               "--ratio", "0.5", "--videos-per-shard", "2", "--workers", "2", "--short-side", "0"]
    reference, out = tmp_path / "reference", tmp_path / "killed"
    start = time.monotonic()
    subprocess.run(command + ["--out", str(reference)], check=True, capture_output=True)
    moments = np.sort(np.random.default_rng(10).uniform(0, time.monotonic() - start, 10))

    for wait in np.diff(moments, prepend=0.0):
        process = subprocess.Popen(command + ["--out", str(out)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(wait)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for sidecar in out.glob("*-*.json"):  # a shard with a sidecar is done, and exactly the reference's
            tar = sidecar.with_suffix(".tar")
            assert tar.read_bytes() == (reference / tar.name).read_bytes()
    assert len(list(out.glob("*-*.json"))) < len(list(reference.glob("*-*.json"))), "killed too late to test much"

    subprocess.run(command + ["--out", str(out)], check=True, capture_output=True)
    names = sorted(p.name for p in reference.iterdir() if p.is_file())
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == names  # and no temporary file
    for name in set(names) - {"dataset.json"}:  # which records the command, --out and all
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_missing_videos_stop_the_build_unless_allowed(real_videos, real_annotations, tmp_path):
    hmdb = dict(dataset="hmdb51", root=str(real_videos), annotations=str(real_annotations), out=str(tmp_path),
                ratio=0.4, workers=2)
    with pytest.raises(MissingVideosError, match="--allow-missing"):
        build(BuildConfig(**hmdb))
    assert len((tmp_path / "missing.txt").read_text().splitlines()) == 6766 - 4

    report = build(BuildConfig(**hmdb, allow_missing=True))
    assert not (tmp_path / "missing.txt").exists()  # failures.jsonl lists them now
    counts = {s: len(getattr(report.splits, s)) for s in ("labeled", "unlabeled", "val")}
    assert counts == {"labeled": 2, "unlabeled": 1, "val": 1}  # wave: 2 pool videos, cartwheel: 1; TrumanShow is test
    frames = {json.loads(line)["path"] for line in (tmp_path / "failures.jsonl").read_text().splitlines()}
    assert len(frames) == 6766 - 4
    assert sample_frames(tmp_path) == {  # what decodes, not what the headers say (one more each)
        "hmdb51_RATRACE_wave_f_nm_np1_fr_goo_37": 72, "hmdb51_SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0": 74,
        "hmdb51_TrumanShow_wave_f_nm_np1_fr_med_26": 48, "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6": 83}


def test_awkward_real_files(real_videos, tmp_path):
    """The folder adapter over videos/other: the corrupt file fails with a reason, the rest are kept."""
    report = build(BuildConfig(dataset="folder", root=str(real_videos), out=str(tmp_path), ratio=1.0,
                               val_fraction=0.01, workers=2))
    failed = {f["path"]: f["reason"] for f in report.failures}
    written = [k for s in report.sidecars for k in s["keys"]]
    assert "other/corrupted.mp4" in failed
    assert len(written) + len(failed) == 14
    assert len(written) >= 12
