"""Video shards (`tgprep build --store video`): the .mp4 round trip, seeking, TG at load, determinism, training on
them, and damaged members, with real PyAV encoding and decoding, real tars and a real Kinetics clip."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from tests.test_build import moving_bar, tar_members
from tests.test_engine import one_thread  # noqa: F401  (autouse: one torch thread, as test_engine runs)
from tests.test_hostile import one_line, problems
from tgprep import h264, video_sample
from tgprep.build import build
from tgprep.cli import main as tgprep_main
from tgprep.config import BuildConfig
from tgprep.datasets.common import Record
from tgprep.errors import UserError
from tgprep.inspection import contact_sheet, iter_samples
from tgprep.verification import verify
from tgprep.sample import SampleError, decode_frames, make_sample, tg_from_stored
from tgprep.video import Video, VideoStream, decode, encode_video
from tgprep.video_decode import check_decodes, clip_frames, decode_positions, tg_image
from tgprep.video_sample import make_video_sample, read_meta
from tgtrain.cli import main as tgtrain_main
from tgtrain.data import shard_urls, train_stream

KINETICS = "kinetics400/using_segway/R6llTwEh07w_000000_000010.mp4"
RECORD = Record("kinetics400_R6llTwEh07w_000000_000010", "using_segway/R6llTwEh07w_000000_000010.mp4",
                "using segway", 375, "val")


def every_frame(sample: dict) -> np.ndarray:
    """The .mp4's frames decoded from the start by PyAV, independently of tgprep."""
    with av.open(io.BytesIO(sample["mp4"])) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def skippable(sample: dict) -> int:
    """How many of the .mp4's pictures tgprep.h264 reads as referred to by no other, so never decoded unwanted."""
    with av.open(io.BytesIO(sample["mp4"])) as container:
        stream = container.streams.video[0]
        size = h264.length_size(stream.codec_context.extradata)
        return sum(h264.is_disposable(packet, size) for packet in container.demux(stream) if packet.size)


@pytest.fixture(scope="module")
def kinetics(real_videos) -> tuple[Video, dict, dict]:
    """A real Kinetics clip (h264 340x256, 303 frames) at short side 128, decoded, and its video sample."""
    path = real_videos / KINETICS
    original = decode(path, short_side=128)
    with VideoStream(path, short_side=128) as stream:
        sample = make_video_sample(RECORD, stream, fps=None, with_label=True, keyframe_interval=8)
    return original, sample, read_meta(sample, classes=400)


def test_a_video_sample_round_trips(kinetics):
    original, sample, meta = kinetics
    assert (meta["frames"], meta["tg_frames"], meta["width"], meta["height"]) == (303, 302, 170, 128)
    assert meta["video"]["keyframes"] == list(range(0, 303, 8)) and meta["format_version"] == 2
    decoded = np.stack(decode_positions(sample, meta, list(range(303))))
    assert np.array_equal(decoded, every_frame(sample))  # tgprep's reader = a plain decode of the member
    error = np.abs(decoded.astype(np.int16) - original.frames).mean()
    assert error < 4.5, error  # the H.264 re-encode (superfast, CRF 18), against the frames decoded from the original
    check_decodes(sample, meta)
    assert sample["cls"] == b"375" and not {"rgb", "tg"} & set(sample)


def test_seeking_gives_the_frames_of_a_decode_from_the_start(kinetics):
    _, sample, meta = kinetics
    full = every_frame(sample)
    rng = np.random.default_rng(0)
    for _ in range(4):
        indices = np.sort(rng.choice(302, 8, replace=False))
        got = clip_frames(sample, meta, indices)
        assert np.array_equal(got["rgb"], full[indices])
        assert np.array_equal(got["tg"], tg_image(full[indices], full[indices + 1]))
    backwards = clip_frames(sample, meta, [300, 7, 7, 150, 0], ("rgb",))["rgb"]  # any order, repeats
    assert np.array_equal(backwards, full[[300, 7, 7, 150, 0]])
    assert skippable(sample) > len(full) / 2  # so these clips were decoded skipping most unwanted frames


def test_a_video_without_skippable_frames_decodes_every_frame(monkeypatch):
    """Samples built before B-frames (every picture a reference) still load: nothing is skipped."""
    monkeypatch.setattr(video_sample, "B_FRAMES", 0)
    frames = moving_bar(40, seed=3, size=(341, 256))
    sample = make_video_sample(RECORD, Video(frames, 25.0, (341, 256)), fps=None, with_label=False)
    meta = read_meta(sample)
    assert skippable(sample) == 0 and meta["video"]["b_frames"] == 0
    indices = np.array([0, 5, 17, 30])
    got = clip_frames(sample, meta, indices)
    full = every_frame(sample)[:, :, :341]  # the coded width is even
    assert np.array_equal(got["rgb"], full[indices])
    assert np.array_equal(got["tg"], tg_image(full[indices], full[indices + 1]))


def nal(header: int, body: bytes = b"\x88\x84", size: int = 4) -> bytes:
    return (1 + len(body)).to_bytes(size, "big") + bytes([header]) + body


def test_the_packet_reader_trusts_no_length():
    assert h264.length_size(b"\x01\x64\x00\x0d\xff\xe1\x00") == 4
    assert h264.length_size(b"\x01\x64\x00\x0d\xfd\xe1\x00") == 2
    assert h264.length_size(b"\x00\x00\x00\x01\x67") is None and h264.length_size(None) is None  # Annex B, none
    sei, b_slice, p_slice = nal(0x06, b"x" * 40), nal(0x01), nal(0x41)  # nal_ref_idc 0, 0 and 2
    assert h264.is_disposable(b_slice, 4) and h264.is_disposable(sei + b_slice, 4)
    assert h264.is_disposable(nal(0x01, size=2), 2) and not h264.is_disposable(nal(0x01, size=2), 4)
    never = [p_slice, nal(0x65), sei, b"", b_slice[:4], b_slice[:-1], b"\x00\x00\x00\x00" + b_slice,
             b"\xff\xff\xff\xff" + b_slice[4:], nal(0x81), sei * 20 + b_slice]  # a reference, broken, or too long
    assert not any(h264.is_disposable(packet, 4) for packet in never)
    assert not h264.is_disposable(b_slice, None)


def test_tg_at_load_is_the_frame_paths_tg_of_the_same_frames(kinetics):
    _, sample, meta = kinetics
    frames = every_frame(sample)[:40]
    indices = np.arange(0, 39, 3)
    tg = clip_frames(sample, meta, indices, ("tg",))["tg"]
    exact = np.clip(np.subtract(frames[indices + 1], frames[indices], dtype=np.int16), -128, 127)
    assert np.array_equal(tg_from_stored(tg.astype(np.int16)), exact)  # same sign, same clipping, no JPEG
    # the frame kind stores the same image as a JPEG: within its error
    frame_sample = make_sample(RECORD, Video(frames, 30.0, (170, 128)), fps=None, quality=90, with_label=False)
    stored = decode_frames(frame_sample, "tg", indices.tolist())
    assert np.abs(stored.astype(np.int16) - tg).mean() < 3  # 4:2:0 JPEG at quality 90 on 170x128


def test_with_fps_tg_still_comes_from_the_original_next_frame(real_videos):
    original = decode(real_videos / KINETICS, short_side=64)
    sample = make_video_sample(RECORD, original, fps=7.5, with_label=False)
    meta = read_meta(sample)
    kept = np.array(meta["frame_indices"])
    assert meta["frames"] == 76 and list(kept[:3]) == [0, 4, 8]
    assert meta["video"]["stored_indices"][:4] == [0, 1, 4, 5]  # each kept frame and its next frame
    got = clip_frames(sample, meta, np.arange(meta["tg_frames"]))
    tg_kept = kept[:meta["tg_frames"]]
    exact = np.subtract(original.frames[tg_kept + 1], original.frames[tg_kept], dtype=np.int16)
    # H.264 at 85x64: its B-frames (tgprep.video_sample) are coded coarser than the references around them
    assert np.abs(tg_from_stored(got["tg"].astype(np.int16)) - np.clip(exact, -128, 127)).mean() < 5


# -- builds ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """root/<class>/<video>: 2 classes x 3 videos at 341x256, 30 to 50 frames."""
    root = tmp_path_factory.mktemp("videos")
    for c, name in enumerate(["left", "right"]):
        (root / name).mkdir()
        for i in range(3):
            encode_video(root / name / f"v{i}.avi", moving_bar(30 + 10 * i, seed=10 * c + i, size=(341, 256)), fps=25)
    (root / "right" / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video")
    return root


def video_config(root: Path, out: Path, **changes) -> BuildConfig:
    values = dict(dataset="folder", root=str(root), out=str(out), ratio=0.5, val_fraction=0.34, videos_per_shard=2,
                  short_side=128, workers=1, store="video")
    return BuildConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def video_build(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built")
    build(video_config(dataset, out))
    return out


def test_video_shards_are_byte_identical_across_workers(dataset, video_build, tmp_path):
    build(video_config(dataset, tmp_path, workers=2))
    assert tar_members(tmp_path) == tar_members(video_build)
    names = set(tar_members(video_build))
    assert any(n.endswith(".mp4") for n in names) and not any(n.endswith((".rgb", ".tg")) for n in names)
    failures = [json.loads(line) for line in (video_build / "failures.jsonl").read_text().splitlines()]
    assert [f["path"] for f in failures] == ["right/broken.avi"]


def test_verify_inspect_and_a_resume_that_mixes_kinds(dataset, video_build, tmp_path):
    assert verify(video_build) == []
    sheet = contact_sheet(sorted(video_build.glob("*.tar")), random_n=2, frames=3)
    assert sheet.height == 2 * (16 + 2 * 128)  # 128-pixel frames drawn at full height, RGB above TG
    result = CliRunner().invoke(tgprep_main, ["inspect", str(video_build)])
    assert result.exit_code == 0 and "6 samples hold video" in result.output, result.output
    with pytest.raises(UserError, match="store='video' \\(now 'frames'\\)"):
        build(video_config(dataset, video_build, store="frames"))


def test_tgtrain_trains_an_epoch_on_video_shards(video_build, tmp_path):
    settings = tmp_path / "sizes.toml"
    settings.write_text("size = 48\nload_size = 56\nclip_len = 4\nbatch_size = 2\nsupervised_epochs = 0\n")
    result = CliRunner().invoke(tgtrain_main, ["run", "--preset", "tiny", "--config", str(settings), "--data",
                                               str(video_build), "--out", str(tmp_path / "run"), "--epochs", "1",
                                               "--workers", "0"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["epoch"] == 1 and np.isfinite(record["loss"]) and "val_top1" in record
    urls = shard_urls(video_build, "unlabeled")
    batch = next(iter(train_stream(urls, batch_size=2, clip_len=8, interval=8, size=64, labeled=False,
                                   epoch_batches=1, seed=0)))
    assert batch["rgb"].shape == batch["tg"].shape == (2, 8, 64, 64, 3)
    assert batch["tg"].float().mean().sub(128).abs() < 8 and batch["tg"].float().std() > 1  # TG around 128


# -- damaged members ----------------------------------------------------------------------------------------

def damaged(sample: dict, how: str) -> dict:
    data, meta = bytes(sample["mp4"]), json.loads(sample["json"])
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "garbage":
        data = bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8))
    elif how == "flipped":  # the header intact, the frames damaged
        array = np.frombuffer(data, np.uint8).copy()
        array[len(array) // 3:: 97] ^= 0xFF
        data = array.tobytes()
    elif how == "wrong size":
        meta["width"] = 4000
    elif how == "too many frames":
        meta["video"]["pts"] = list(range(len(data)))
    return {**sample, "mp4": data, "json": json.dumps(meta).encode()}


@pytest.mark.parametrize("how", ["truncated", "garbage", "flipped", "wrong size", "too many frames"])
def test_a_damaged_video_member_fails_in_one_line(kinetics, how):
    _, sample, _ = kinetics
    bad = damaged(sample, how)
    with pytest.raises(SampleError) as caught:
        meta = read_meta(bad)
        clip_frames(bad, meta, np.arange(0, 300, 37))
        check_decodes(bad, meta)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"sample {RECORD.key}: "), message


def test_verify_and_tgtrain_name_a_truncated_video_member(video_build, tmp_path):
    tar_path = max(video_build.glob("labeled-*.tar"), key=lambda p: p.stat().st_size)  # one with samples
    out = tmp_path / "shards"
    out.mkdir()
    with tarfile.open(out / tar_path.name, "w") as tar:
        for sample in iter_samples(tar_path):
            for field in sorted(f for f in sample if f != "__key__"):
                data = sample[field][:len(sample[field]) // 2] if field == "mp4" else sample[field]
                info = tarfile.TarInfo(f"{sample['__key__']}.{field}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    result = CliRunner().invoke(tgprep_main, ["verify", str(out / tar_path.name)])
    problems(result, tar_path.name, "does not decode")
    stream = train_stream([str(out / tar_path.name)], batch_size=1, clip_len=4, interval=8, size=32, labeled=True,
                          epoch_batches=1, seed=0)
    with pytest.raises(SampleError, match="damaged or truncated"):
        next(iter(stream))
