"""inspect and verify on real shards made by a real build: counts, the contact sheet, and damaged shards."""

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.errors import UserError
from tgprep.inspection import ShardError, contact_sheet, format_summary, iter_samples, shard_paths, summarize
from tgprep.verification import verify
from tgprep.shards import file_sha256
from tgprep.video import encode_video

LENGTHS = {"left": (10, 12, 14), "right": (11, 13, 15)}  # frames of each class's three videos


def sliding_square(frames: int, step: int) -> np.ndarray:
    """A white square on a dark background moving step pixels per frame: TG is + at its front, - at its back."""
    video = np.full((frames, 48, 64, 3), 40, np.uint8)
    for t in range(frames):
        x = 8 + (step * t) % 40
        video[t, 14:34, x:x + 16] = 220
    return video


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """A finished build of a 2-class folder dataset (6 videos and one text file named .avi)."""
    root = tmp_path_factory.mktemp("videos")
    for name, lengths in LENGTHS.items():
        (root / name).mkdir()
        for i, frames in enumerate(lengths):
            encode_video(root / name / f"clip{i}.avi", sliding_square(frames, 2 if name == "left" else 3), fps=25)
    (root / "left" / "broken.avi").write_text("not a video")
    out = tmp_path_factory.mktemp("out")
    build(BuildConfig(dataset="folder", root=str(root), out=str(out), ratio=0.5, videos_per_shard=2, workers=1))
    return out


@pytest.fixture
def copy(out, tmp_path) -> Path:
    """A copy of the good output that a test may damage."""
    return Path(shutil.copytree(out, tmp_path / "copy"))


def manifest_count(out: Path, set_name: str) -> int:
    return len((out / "manifests" / f"{set_name}.txt").read_text().splitlines())


def test_shard_paths_takes_a_shard_a_set_a_pattern_or_a_root(out):
    every = shard_paths(out)
    assert every == [p for name in ("labeled", "unlabeled", "val") for p in sorted(out.glob(f"{name}-*.tar"))]
    assert len(every) >= 4 and {p.name.split("-")[0] for p in every} == {"labeled", "unlabeled", "val"}
    assert shard_paths(out / "val") == sorted(out.glob("val-*.tar"))
    assert shard_paths(every[0]) == [every[0]]
    assert shard_paths(out / "labeled-{000000..000009}.tar") == sorted(out.glob("labeled-*.tar"))
    with pytest.raises(UserError, match="no shards found"):
        shard_paths(out / "nothing")


def test_iter_samples_groups_members_by_key_in_tar_order(out):
    tar_path = shard_paths(out / "labeled")[0]
    samples = list(iter_samples(tar_path))
    assert [s["__key__"] for s in samples] == json.loads(tar_path.with_suffix(".json").read_text())["keys"]
    assert all({"json", "cls", "rgb", "tg"} <= set(s) for s in samples)
    assert all(isinstance(s["rgb"], bytes) for s in samples)


def test_summarize_counts_samples_classes_frames_and_failures(out):
    summary = summarize(shard_paths(out))
    total = summary["total"]
    assert total["samples"] == 6 and total["failures"] == 1
    assert total["classes"] == {"left": 3, "right": 3}
    assert total["frames_per_video"] == {"min": 10, "median": 12.5, "max": 15}
    assert total["frames"] == sum(sum(v) for v in LENGTHS.values())
    for set_name, row in summary["sets"].items():
        failed = sum(len(json.loads(p.with_suffix(".json").read_text())["failures"])
                     for p in out.glob(f"{set_name}-*.tar"))
        assert row["samples"] + failed == manifest_count(out, set_name)
        assert row["bytes"] == sum(p.stat().st_size for p in out.glob(f"{set_name}-*.tar"))
    assert 100 < total["rgb_bytes_per_frame"] < 5000 and 100 < total["tg_bytes_per_frame"] < 5000
    text = format_summary(summary)
    assert text.splitlines()[0].split()[:3] == ["set", "shards", "samples"]
    assert "total" in text and "10 / 12.5 / 15" in text
    assert json.loads(json.dumps(summary)) == summary  # --json prints it as it is


def test_contact_sheet_shows_rgb_above_signed_tg(out):
    keys = [k for p in shard_paths(out) for k in json.loads(p.with_suffix(".json").read_text())["keys"]][:2]
    sheet = np.asarray(contact_sheet(shard_paths(out), keys=keys))
    caption, h, w = 16, 48, 64
    assert sheet.shape[0] == 2 * (caption + 2 * h) and sheet.shape[1] >= 8 * w  # a caption may be wider
    rgb = sheet[caption:caption + h, w:2 * w].astype(int)   # second tile: its frame number is drawn on it too
    tg = sheet[caption + h:caption + 2 * h, w:2 * w].astype(int)
    assert rgb.max() > 200 and rgb.min() < 60               # the square on its background
    assert abs(np.median(tg) - 128) <= 2                    # no change is mid-grey
    assert tg.max() > 180 and tg.min() < 76                 # the square's front and back: the sign shows
    again = np.asarray(contact_sheet(shard_paths(out), random_n=2, seed=3))
    assert again.shape[0] == sheet.shape[0]  # two samples again (their captions may differ in width)


def test_contact_sheet_names_the_shards_searched_for_an_unknown_key(out):
    with pytest.raises(UserError, match="folder_nope.*labeled-000000.tar"):
        contact_sheet(shard_paths(out), keys=["folder_nope"])


def test_verify_passes_good_shards(out):
    assert verify(out) == []


def test_verify_finds_a_truncated_tar(copy):
    tar_path = shard_paths(copy / "unlabeled")[0]
    data = tar_path.read_bytes()
    with tarfile.open(tar_path) as tar:
        first = tar.next()
    for end in (len(data) // 2, first.offset_data + (first.size + 511) // 512 * 512):  # mid-member, between members
        tar_path.write_bytes(data[:end])
        with pytest.raises(ShardError, match=tar_path.name):
            list(iter_samples(tar_path))
    problems = verify(copy)
    assert problems and all(p.startswith(tar_path.name) for p in problems)
    assert any("sha256" in p for p in problems) and any("cut short" in p or "damaged" in p for p in problems)


def test_verify_finds_a_flipped_byte_inside_a_member(copy):
    tar_path = shard_paths(copy / "labeled")[0]
    with tarfile.open(tar_path) as tar:
        member = next(m for m in tar if m.name.endswith(".rgb"))
    data = bytearray(tar_path.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0xFF
    tar_path.write_bytes(bytes(data))
    problems = verify(copy)
    assert any(p.startswith(f"{tar_path.name}: sha256") for p in problems)


def test_verify_finds_a_missing_sidecar(copy):
    tar_path = shard_paths(copy / "val")[0]
    tar_path.with_suffix(".json").unlink()
    assert verify(copy) == [f"{tar_path.name}: no readable sidecar {tar_path.stem}.json "
                            "(the build did not finish it); run the build again"]


def test_verify_decodes_every_frame(copy):
    """A broken JPEG in a tar whose sidecar matches again: only decoding the frames can find it."""
    tar_path = shard_paths(copy / "labeled")[0]
    with tarfile.open(tar_path) as tar:
        key = tar.next().name.split(".")[0]
        meta = json.loads(tar.extractfile(f"{key}.json").read())
        tg = tar.getmember(f"{key}.tg")
    data = bytearray(tar_path.read_bytes())
    start = tg.offset_data + meta["tg_offsets"][-2]  # the last TG frame: wipe its JPEG header, keep the length
    data[start:start + 40] = bytes(40)
    tar_path.write_bytes(bytes(data))
    sidecar = json.loads(tar_path.with_suffix(".json").read_text())
    sidecar.update(sha256=file_sha256(tar_path))
    tar_path.with_suffix(".json").write_text(json.dumps(sidecar))
    problems = verify(copy)
    assert len(problems) == 1
    assert problems[0].startswith(f"{tar_path.name}: {key}: does not decode: {key} tg frame {meta['tg_frames'] - 1}")


def test_verify_names_a_shard_that_is_gone(copy):
    tar_path = shard_paths(copy / "unlabeled")[-1]
    tar_path.unlink()
    assert verify(copy) == [f"{tar_path.name}: missing, though {tar_path.stem}.json names it; run the build again"]


def test_verify_stops_listing_after_twenty_problems(copy):
    for tar_path in shard_paths(copy):
        tar_path.with_suffix(".json").unlink()
    for i in range(30):
        shutil.copy(shard_paths(copy / "val")[0], copy / f"val-{100 + i:06d}.tar")
    problems = verify(copy)
    assert len(problems) == 21 and problems[-1].startswith("... and ")
    assert int(problems[-1].split()[2]) == len(shard_paths(copy)) - 20
