"""The sample format: frame selection, TG, the round trip through JPEG, determinism, damaged samples, and shards of
the earlier 4:4:4 layout."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tgprep.datasets.common import Record
from tgprep.shards import ShardTask, write_shard
from tgprep.verification import verify
import simplejpeg

from tgprep import limits, planes
from tgprep.sample import SampleError, decode_frames, keeps, make_sample, read_meta, select_frames, tg_from_stored
from tgprep.video import Video, VideoError, decode
from tgtrain.data import train_stream

RECORD = Record("hmdb51_wave_clip", "wave/clip.avi", "wave", 7, "train")


@pytest.fixture(scope="module")
def hmdb(real_videos) -> Video:
    return decode(real_videos / "hmdb51/wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi")


@pytest.fixture(scope="module")
def sample(hmdb) -> dict:
    return make_sample(RECORD, hmdb, fps=None, quality=90, with_label=True)


def ramp_video(frames: int) -> Video:
    """Frame t is flat grey 10 * t squared: every difference is different, so a wrong pairing shows."""
    values = (10 * np.arange(frames) ** 2 % 256).astype(np.uint8)
    return Video(np.broadcast_to(values[:, None, None, None], (frames, 16, 24, 3)).copy(), 30.0, (24, 16))


def every(count: int, fps: float) -> tuple[np.ndarray, float]:
    return np.arange(count) / fps, count / fps


def test_select_frames_at_a_constant_rate_keeps_every_native_over_fps_th_frame():
    assert select_frames(*every(5, 30.0), None).tolist() == [0, 1, 2, 3, 4]
    assert select_frames(*every(5, 30.0), 60.0).tolist() == [0, 1, 2, 3, 4]
    assert select_frames(*every(10, 30.0), 10.0).tolist() == [0, 3, 6, 9]
    assert select_frames(*every(10, 30.0), 7.5).tolist() == [0, 4, 8]
    for count, native, fps in ((74, 30000 / 1001, 10.0), (250, 25.0, 12.0), (300, 30.0, 23.9), (97, 24.0, 4.0)):
        old = np.unique(np.floor(np.arange(np.ceil(count * fps / native - 1e-9)) * (native / fps) + 1e-9))
        assert select_frames(*every(count, native), fps).tolist() == old.tolist(), (count, native, fps)
    with pytest.raises(ValueError):
        keeps(0.0, 0.1, 0.0)


def test_select_frames_by_time_keeps_a_slow_part_whole_and_stores_no_frame_twice():
    # 30 frames at 1/30 s, then 22 at 4/30 s (the source that found the index-based selection out)
    times = np.array([k / 30 for k in range(30)] + [(30 + 4 * j) / 30 for j in range(22)])
    kept = select_frames(times, times[-1] + 4 / 30, 10.0).tolist()
    assert kept == [*range(0, 30, 3), *range(30, 52)]  # every third of the fast part, all of the slow one


def test_tg_planes_are_next_minus_previous_clipped():
    frames = np.array([0, 200, 50, 255], np.uint8)[:, None, None, None].repeat(3, -1)
    tg = [planes.difference(planes.from_rgb(frames[k]), planes.from_rgb(frames[k + 1])).planes for k in (0, 2)]
    assert [p.dtype for p in tg[0]] == [np.uint8] * 3 and tg[0][0].shape == (1, 1)
    assert [t[0][0, 0] for t in tg] == [255, 255] and [t[1][0, 0] for t in tg] == [128, 128]  # grey: no chroma
    assert planes.difference(planes.from_rgb(frames[1]), planes.from_rgb(frames[2])).y[0, 0] == 0  # -150 clipped


def test_fps_keeps_tg_from_the_next_original_frame():
    video = ramp_video(10)
    sample = make_sample(RECORD, video, fps=10.0, quality=95, with_label=False)
    meta = read_meta(sample)
    assert meta["frame_indices"] == [0, 3, 6, 9] and meta["frames"] == 4 and meta["tg_frames"] == 3
    assert meta["fps"] == 10.0 and meta["source_fps"] == 30.0 and meta["frame_times"] == [0.0, 0.1, 0.2, 0.3]
    tg = tg_from_stored(decode_frames(sample, "tg", [0, 1, 2]))[:, 0, 0, 0]
    # x[k+1] - x[k] for k = 0, 3, 6, clipped to the stored range: 10, 70, 127 (130 clipped)
    assert np.abs(tg - [10, 70, 127]).max() <= 1


def test_tg_read_back_is_within_the_documented_bound(hmdb, sample):
    meta = read_meta(sample)
    assert meta["frames"] == 74 and meta["tg_frames"] == 73
    exact = np.subtract(hmdb.frames[1:], hmdb.frames[:-1], dtype=np.int16)
    back = tg_from_stored(decode_frames(sample, "tg", range(73)))
    error = np.abs(back - exact).mean()
    rgb = decode_frames(sample, "rgb", range(74)).astype(np.int16)
    derived = np.abs(rgb[1:] - rgb[:-1] - exact).mean()  # what a loader could compute from the stored RGB
    assert error <= 0.75 and error < derived  # the documented claims at quality 90 (sample.py)


def test_rgb_read_back_is_close_to_the_decoded_frames(hmdb, sample):
    back = decode_frames(sample, "rgb", [0, 40, 73])
    mse = ((back.astype(float) - hmdb.frames[[0, 40, 73]]) ** 2).mean()
    assert 10 * np.log10(255**2 / mse) > 40  # PSNR in dB
    small = decode_frames(sample, "rgb", [40], reduce=4)
    assert small.shape == (1, 60, 80, 3)
    assert np.abs(small[0].astype(float) - hmdb.frames[40].reshape(60, 4, 80, 4, 3).mean((1, 3))).mean() < 3


def test_sample_fields_and_deterministic_bytes(hmdb, sample):
    again = make_sample(RECORD, hmdb, fps=None, quality=90, with_label=True)
    assert again == sample
    assert sample["__key__"] == "hmdb51_wave_clip" and sample["cls"] == b"7"
    meta = json.loads(sample["json"])
    assert list(meta) == sorted(meta)
    assert (meta["dataset"], meta["class"], meta["label"], meta["width"], meta["height"]) == ("hmdb51", "wave", 7, 320, 240)
    assert meta["tg_encoding"]["sign"] == "next_minus_previous"
    assert meta["rgb_encoding"]["subsampling"] == meta["tg_encoding"]["subsampling"] == "4:2:0"
    assert meta["source_pixels"] == {"format": "rgb24", "step": "from_rgb"}
    assert "cls" not in make_sample(RECORD, ramp_video(3), fps=None, quality=90, with_label=False)


def test_tg_from_stored_is_the_inverse_on_numpy_and_torch():
    diff = np.arange(-128, 128, dtype=np.int16).reshape(16, 16, 1).repeat(3, -1)
    stored = (diff + 128).astype(np.uint8)
    assert np.array_equal(tg_from_stored(stored), diff)
    on_torch = tg_from_stored(torch.from_numpy(stored))
    assert on_torch.dtype == torch.float32 and torch.equal(on_torch, torch.from_numpy(diff).float())


def damaged(sample: dict, how: str) -> dict:
    bad, meta = dict(sample), json.loads(sample["json"])
    if how == "bad json":
        bad["json"] = sample["json"][:-5]
    elif how == "no json":
        del bad["json"]
    elif how == "offsets beyond the payload":
        meta["rgb_offsets"][5] = len(sample["rgb"]) + 100
    elif how == "truncated payload":
        bad["tg"] = sample["tg"][:-1000]
    elif how == "missing field":
        del meta["width"]
    elif how == "missing member":
        del bad["rgb"]
    elif how == "frames do not match":
        meta["tg_frames"] = 10
    if how in ("offsets beyond the payload", "missing field", "frames do not match"):
        bad["json"] = json.dumps(meta).encode()
    return bad


@pytest.mark.parametrize("how", ["bad json", "no json", "offsets beyond the payload", "truncated payload",
                                 "missing field", "missing member", "frames do not match"])
def test_malformed_samples_raise_sample_error(sample, how):
    with pytest.raises(SampleError):
        decode_frames(damaged(sample, how), "rgb" if how != "truncated payload" else "tg", [0])


def test_damaged_jpeg_and_bad_index_raise_sample_error(sample):
    meta = read_meta(sample)
    start, end = meta["rgb_offsets"][3], meta["rgb_offsets"][4]
    garbage = dict(sample, rgb=sample["rgb"][:start] + bytes(end - start) + sample["rgb"][end:])
    with pytest.raises(SampleError, match="frame 3"):
        decode_frames(garbage, "rgb", [3])
    with pytest.raises(SampleError, match="no tg frame 73"):
        decode_frames(sample, "tg", [73])


def test_reduced_decoding_gives_the_rounded_up_size_for_every_side():
    """libjpeg's DCT scaling for every width and height 1..64 at every reduction: ceil(side / reduce), pixels
    close to the full decoding shrunk by the same factor (reduce 1: the JPEG itself)."""
    y, x = np.mgrid[0:64, 0:64]
    smooth = np.stack([4 * x, 4 * y, 2 * (x + y)], -1).astype(np.uint8)  # ramps: DCT scaling is close to a box mean
    for width in range(1, 65):
        for height in range(1, 65):
            video = Video(smooth[None, :height, :width].copy(), 25.0, (width, height))
            sample = make_sample(RECORD, video, fps=None, quality=95, with_label=False)
            full = decode_frames(sample, "rgb", [0])[0]
            for reduce in (2, 4, 8):
                small = decode_frames(sample, "rgb", [0], reduce)[0]
                assert small.shape == (-(-height // reduce), -(-width // reduce), 3), (width, height, reduce)
                shrunk = np.asarray(Image.fromarray(full).reduce(reduce))
                assert np.abs(small.astype(int) - shrunk).mean() < 6, (width, height, reduce)


def old_layout_sample(record: Record, video: Video, quality: int = 90) -> dict:
    """A sample as builds before the planes wrote it: RGB 4:4:4 JPEGs of the RGB frames, TG of their RGB difference,
    and the .json of then (no frame_times, no source_pixels)."""
    rgb = [simplejpeg.encode_jpeg(np.ascontiguousarray(x), quality, "rgb", "444") for x in video.frames]
    diffs = np.subtract(video.frames[1:], video.frames[:-1], dtype=np.int16)
    tg = [simplejpeg.encode_jpeg((np.clip(d, -128, 127) + 128).astype(np.uint8), quality, "rgb", "420") for d in diffs]
    offsets = [np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).tolist() for jpegs in (rgb, tg)]
    width, height = video.size
    meta = {"dataset": "hmdb51", "path": record.path, "class": record.class_name, "label": record.label,
            "split": record.split, "fps": video.fps, "source_fps": video.fps, "frames": len(rgb), "tg_frames": len(tg),
            "frame_indices": list(range(len(rgb))), "width": width, "height": height, "source_width": width,
            "source_height": height, "rgb_offsets": offsets[0], "tg_offsets": offsets[1],
            "rgb_encoding": {"name": "jpeg", "quality": quality, "subsampling": "4:4:4"},
            "tg_encoding": {"name": "jpeg-clip128", "scale": 1.0, "offset": -128.0, "subsampling": "4:2:0"},
            "format": "tgprep-sample", "format_version": 1, "tgprep_version": "0.1.0"}
    return {"__key__": record.key, "json": json.dumps(meta, sort_keys=True).encode(), "rgb": b"".join(rgb),
            "tg": b"".join(tg), "cls": str(record.label).encode()}


def test_shards_of_the_earlier_4_4_4_layout_still_load_and_verify(hmdb, tmp_path):
    """Shards built before the planes (RGB 4:4:4 from rgb24) beside new ones: verify, the loader and the reader
    take both, and decode both to close frames."""
    old = old_layout_sample(RECORD, hmdb)
    new = make_sample(RECORD, hmdb, fps=None, quality=90, with_label=True)
    for name, sample in (("labeled-000000", old), ("labeled-000001", new)):
        write_shard(tmp_path, ShardTask(name, "labeled", [RECORD]), lambda record, with_label: dict(sample))
    assert verify(tmp_path) == []
    for sample in (old, new):
        decoded = decode_frames(sample, "rgb", [0, 40, 73]).astype(float)
        assert 10 * np.log10(255**2 / ((decoded - hmdb.frames[[0, 40, 73]]) ** 2).mean()) > 37  # PSNR in dB
    assert [simplejpeg.decode_jpeg_header(s["rgb"])[3] for s in (old, new)] == ["444", "420"]
    urls = [str(tar) for tar in sorted(tmp_path.glob("*.tar"))]
    batches = list(train_stream(urls, batch_size=2, clip_len=4, interval=8, size=112, labeled=True, epoch_batches=2,
                                seed=0))
    assert all(b["rgb"].shape == b["tg"].shape == (2, 4, 112, 112, 3) for b in batches)


def test_a_json_past_the_readers_limit_is_a_failure_not_a_sample(hmdb, monkeypatch, tmp_path):
    monkeypatch.setattr(limits, "MAX_SAMPLE_JSON_BYTES", 2000)  # 74 frames make 2.6 KB of .json, 10 frames 1 KB
    assert make_sample(RECORD, Video(hmdb.frames[:10], 30.0, (320, 240)), fps=None, quality=90, with_label=False)
    with pytest.raises(VideoError, match=r"^74 frames make a \.json of \d+ bytes, over the readers' limit of 2000;"):
        make_sample(RECORD, hmdb, fps=None, quality=90, with_label=False, spool=tmp_path)
    assert not list(tmp_path.iterdir())
