"""tgtrain.data on real tars: clip indices, batches, RGB/TG pairing, epoch length, DDP splits, bad shards."""

import gc
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.datasets.common import Record
from tgprep.errors import UserError
from tgprep.sample import SampleError, make_sample, tg_from_stored
from tgprep.shards import ShardTask, write_shard
from tgprep.video import Video, encode_video
from tgtrain.clips import choose_reduce, crop_box, crop_square, resized_crop, train_indices
from tgtrain.clips import test_indices as uniform_indices  # renamed so that pytest does not collect it
from tgtrain.data import eval_stream, loader, shard_urls, train_stream

CLASSES = ["a", "b", "c"]


def brightness(k):
    """Frame k of every made-up video is uniform at this level: distinct per frame, and so is the TG
    brightness(k + 1) - brightness(k) = 2k + 2, so a decoded frame tells which frame (and which TG) it is."""
    return 10 + k * (k + 1)


def frame_number(frames: np.ndarray) -> np.ndarray:
    """The k of each decoded (..., H, W, 3) frame, from its mean level."""
    levels = brightness(np.arange(16))
    means = frames.reshape(*frames.shape[:-3], -1).astype(np.float64).mean(-1)
    return np.abs(means[..., None] - levels).argmin(-1)


def video(n: int, height: int, width: int) -> Video:
    frames = np.empty((n, height, width, 3), np.uint8)
    frames[:] = brightness(np.arange(n)).astype(np.uint8)[:, None, None, None]
    return Video(frames, 25.0, (width, height))


# key -> (label, frames, height, width): landscape, portrait and square frames; 2 frames is the shortest video
VIDEOS = {f"t_v{i:02d}": (i % 3, n, h, w) for i, (n, h, w) in enumerate(
    [(16, 24, 32), (2, 32, 24), (9, 24, 24), (12, 24, 40), (3, 24, 32), (16, 32, 24), (5, 24, 32),
     (13, 24, 32), (7, 24, 32), (10, 24, 32), (16, 24, 32), (4, 32, 24), (11, 24, 32), (8, 24, 32),
     (14, 24, 32), (6, 24, 32), (15, 24, 32), (16, 24, 24)])}
# uneven shards: labeled 1, 2 and 7 samples; unlabeled 3; val 2, 2 and 1
SHARDS = {"labeled-000000": range(0, 1), "labeled-000001": range(1, 3), "labeled-000002": range(3, 10),
          "unlabeled-000000": range(10, 13),
          "val-000000": range(13, 15), "val-000001": range(15, 17), "val-000002": range(17, 18)}


def write_shards(out: Path, names) -> None:
    keys = sorted(VIDEOS)

    def make(record: Record, with_label: bool) -> dict:
        _, n, h, w = VIDEOS[record.key]
        return make_sample(record, video(n, h, w), fps=None, quality=90, with_label=with_label)

    for name in names:
        set_name = name.split("-")[0]
        records = [Record(keys[i], f"{keys[i]}.avi", CLASSES[VIDEOS[keys[i]][0]], VIDEOS[keys[i]][0],
                          "val" if set_name == "val" else "train") for i in SHARDS[name]]
        write_shard(out, ShardTask(name, set_name, records), make)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_shards(out, SHARDS)
    return out


def keys_of(set_names) -> set[str]:
    keys = sorted(VIDEOS)
    return {keys[i] for name, r in SHARDS.items() if name.split("-")[0] in set_names for i in r}


def stream(urls, **changes):
    settings = dict(batch_size=3, clip_len=4, interval=3, size=24, reduce=1, modalities=("rgb", "tg"),
                    labeled=True, epoch_batches=4, seed=0, shuffle=4)
    return train_stream(urls, **{**settings, **changes})


# -- indices -----------------------------------------------------------------------------------------------

def test_train_indices_step_by_interval_from_a_random_start():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = train_indices(30, 4, 5, rng)
        assert np.array_equal(np.diff(idx), [5, 5, 5])
        starts.add(int(idx[0]))
    assert starts == set(range(30 - 15))  # every start from which the whole clip fits, and no other


def test_train_indices_loop_over_short_videos():
    rng = np.random.default_rng(1)
    for n in (1, 2, 5):
        for _ in range(20):
            idx = train_indices(n, 8, 8, rng)
            assert idx.shape == (8,) and idx.min() >= 0 and idx.max() < n
            assert np.array_equal(idx, (idx[0] + np.arange(8) * 8) % n)
    assert np.array_equal(train_indices(1, 8, 8, rng), np.zeros(8))
    assert {tuple(train_indices(2, 4, 1, rng)) for _ in range(20)} == {(0, 1, 0, 1), (1, 0, 1, 0)}


def test_test_indices_spread_clips_uniformly():
    clips = uniform_indices(100, 8, 8, 3)  # a clip spans 57 frames: starts in 0..43
    assert [int(c[0]) for c in clips] == [7, 22, 36]
    assert all(np.array_equal(np.diff(c), [8] * 7) for c in clips)
    assert int(uniform_indices(100, 8, 8, 1)[0][0]) == 22  # one clip: the centre
    assert [int(c[0]) for c in uniform_indices(57, 8, 8, 10)] == [0] * 10  # exactly fits: one place only


def test_test_indices_loop_over_short_videos():
    assert [c.tolist() for c in uniform_indices(1, 4, 8, 2)] == [[0, 0, 0, 0]] * 2
    assert [c.tolist() for c in uniform_indices(2, 4, 1, 2)] == [[0, 1, 0, 1]] * 2
    assert uniform_indices(5, 8, 8, 10)[3].tolist() == [0, 3, 1, 4, 2, 0, 3, 1]


def test_choose_reduce_keeps_the_short_side_at_least_size():
    assert choose_reduce(256, 224) == 1
    assert choose_reduce(256, 128) == 2
    assert choose_reduce(240, 112) == 2
    assert choose_reduce(256, 32) == 8
    assert choose_reduce(256, 8) == 8  # libjpeg scales down by 8 at most
    assert choose_reduce(248, 63) == 2 and choose_reduce(249, 63) == 4  # JPEG rounds up: ceil(249 / 4) = 63


# -- crops -------------------------------------------------------------------------------------------------

def test_crop_square_slides_along_the_long_side_and_resizes_only_when_needed():
    landscape = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    for where, first_column in ((0.0, 0), (0.5, 1), (1.0, 2)):
        out = crop_square(landscape, where, 4)
        assert np.array_equal(out, landscape[:, :, first_column:first_column + 4])
        assert np.shares_memory(out, landscape)  # already the right size: no copy
    portrait = landscape.transpose(0, 2, 1, 3)
    assert np.array_equal(crop_square(portrait, 1.0, 4), portrait[:, 2:6])
    noise = np.random.default_rng(0).integers(0, 256, (3, 10, 20, 3), dtype=np.uint8)
    for size in (5, 16):  # smaller and larger than the square: Pillow's bilinear filter, rounded alike
        pillow = [Image.fromarray(np.ascontiguousarray(f[:, 3:13])).resize((size, size), Image.Resampling.BILINEAR)
                  for f in noise]
        out = crop_square(noise, 0.3, size)
        assert out.shape == (3, size, size, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - np.stack(pillow)).max() <= 1


def test_crop_box_is_mmaction2s_random_resized_crop_over_the_whole_frame():
    rng = np.random.default_rng(0)
    boxes = np.array([crop_box(256, 455, rng) for _ in range(2000)])
    x0, y0, w, h = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 455).all() and (y0 + h <= 256).all()
    assert (w > 256).mean() > 0.1  # boxes wider than the short side's square: it spans the frame's width
    assert x0.min() == 0 and (x0 + w).max() == 455  # every part of the frame can be in a box
    assert 0.07 < (w * h / (455 * 256)).min() and (w * h / (455 * 256)).max() <= 1  # area 0.08-1 of the frame
    assert 3 / 4 - 0.02 < (w / h).min() and (w / h).max() < 4 / 3 + 0.02
    # the fallback when no draw fits: the centred square of the short side
    assert crop_box(256, 455, rng, area=(1.0, 1.0), ratio=(2.0, 3.0)) == (99, 0, 256, 256)


def test_resized_crop_cuts_the_box_and_flips():
    frames = np.arange(2 * 6 * 8 * 3, dtype=np.uint8).reshape(2, 6, 8, 3)
    out = resized_crop(frames, (2, 1, 4, 4), 4)
    assert np.array_equal(out, frames[:, 1:5, 2:6]) and np.shares_memory(out, frames)
    assert np.array_equal(resized_crop(frames, (2, 1, 4, 4), 4, flip=True), frames[:, 1:5, 5:1:-1])
    assert resized_crop(frames, (0, 0, 8, 3), 5).shape == (2, 5, 5, 3)


@pytest.mark.parametrize("box", [(3, 5, 231, 177), (0, 0, 455, 256), (17, 2, 101, 99)])
def test_flipping_before_the_resize_gives_the_mirror_of_the_resized_box(box):
    frames = np.random.default_rng(0).integers(0, 256, (3, 256, 455, 3), dtype=np.uint8)
    mirrored = resized_crop(frames, box, 224)[:, :, ::-1]
    assert np.array_equal(resized_crop(frames, box, 224, flip=True), mirrored)


# -- training streams --------------------------------------------------------------------------------------

def test_train_batches_hold_the_sampled_frames_and_their_tg(shards):
    urls = shard_urls(shards, "labeled")
    batches = list(stream(urls, epoch_batches=6))
    assert len(batches) == 6
    for batch in batches:
        assert batch["rgb"].shape == batch["tg"].shape == (3, 4, 24, 24, 3)
        assert batch["rgb"].dtype == batch["tg"].dtype == torch.uint8
        assert batch["label"].dtype == batch["true_label"].dtype == torch.int64
        for b, key in enumerate(batch["key"]):
            label, n, _, _ = VIDEOS[key]
            assert batch["label"][b] == batch["true_label"][b] == label
            k = frame_number(batch["rgb"][b].numpy())
            # the clip's frames: interval 3 over the TG frames (n - 1), looping when short
            assert np.array_equal(k, (k[0] + np.arange(4) * 3) % (n - 1)), (key, k)
            # TG i is RGB i + 1 minus RGB i: brightness(k + 1) - brightness(k) = 2k + 2
            tg = tg_from_stored(batch["tg"][b].numpy().astype(np.float64)).mean(axis=(1, 2, 3))
            assert np.abs(tg - (2 * k + 2)).max() < 1.5, (key, k, tg)
    seen = Counter(key for batch in batches for key in batch["key"])
    assert set(seen) <= keys_of({"labeled"}) and len(seen) >= 6  # many videos, from several shards


def test_weak_crops_span_the_width_and_rgb_and_tg_share_box_and_flip(tmp_path):
    """A 455x256 video of two frames, P and 2P, where P codes the column in red and the row in green: TG 0 is P
    again, so the RGB and the TG crop of a clip show the same pixels only if they share box and flip."""
    cols, rows = np.meshgrid(np.arange(455), np.arange(256))
    pattern = np.stack([cols * 120 // 454, rows * 120 // 255, np.full_like(cols, 60)], -1).astype(np.uint8)
    record = Record("t_wide", "t_wide.avi", "a", 0, "train")
    write_shard(tmp_path, ShardTask("labeled-000000", "labeled", [record]),
                lambda r, with_label: make_sample(r, Video(np.stack([pattern, 2 * pattern]), 25.0, (455, 256)),
                                                  fps=None, quality=95, with_label=with_label))
    batches = stream(shard_urls(tmp_path, "labeled"), batch_size=8, clip_len=1, size=32, epoch_batches=8, shuffle=1)
    spans, flips = [], set()
    for batch in batches:
        rgb = batch["rgb"][:, 0].float()
        tg = tg_from_stored(batch["tg"][:, 0].float())
        assert (rgb - tg).abs().mean() < 2  # the same box and flip: the same pixels
        red = rgb[..., 0].mean(1)  # per clip, the column code across the crop
        spans += ((red.amax(1) - red.amin(1)) * 454 / 120).tolist()
        flips |= set((red[:, -1] > red[:, 0]).tolist())
    assert max(spans) > 300 and min(spans) < 200  # wider than the 256-pixel square, and small boxes too
    assert flips == {True, False}


def test_every_sample_is_drawn_as_often_whatever_its_shard_size(shards):
    batches = stream(shard_urls(shards, "labeled"), modalities=("rgb",), clip_len=1, batch_size=10, epoch_batches=30)
    seen = Counter(key for batch in batches for key in batch["key"])
    assert set(seen) == keys_of({"labeled"})
    assert 15 <= min(seen.values()) and max(seen.values()) <= 45  # 30 each on average; the lone sample too


def test_unlabeled_samples_give_label_minus_one_and_their_true_label(shards):
    urls = shard_urls(shards, "unlabeled") + shard_urls(shards, "labeled")
    batches = list(stream(urls, labeled=False, modalities=("rgb",), size=16, reduce=2))
    for batch in batches:
        assert set(batch) == {"rgb", "label", "true_label", "key"}
        assert batch["rgb"].shape == (3, 4, 16, 16, 3)
        assert (batch["label"] == -1).all()
        assert batch["true_label"].tolist() == [VIDEOS[key][0] for key in batch["key"]]
        for b, key in enumerate(batch["key"]):
            k = frame_number(batch["rgb"][b].numpy())  # RGB only: clips range over all n frames
            assert np.array_equal(k, (k[0] + np.arange(4) * 3) % VIDEOS[key][1])


def test_labeled_stream_refuses_a_sample_without_cls(shards):
    with pytest.raises(SampleError, match=r"unlabeled-000000\.tar: sample t_v1\d: \.cls None is not its label"):
        next(iter(stream(shard_urls(shards, "unlabeled"))))


def test_epoch_length_is_fixed_with_uneven_shards_and_two_workers(shards):
    data = loader(stream(shard_urls(shards, "labeled"), epoch_batches=5, seed=3), workers=2)
    first, second = ([b["key"] for b in data] for _ in range(2))
    assert len(first) == len(second) == 5
    assert all(len(keys) == 3 for keys in first + second)
    assert first != second  # persistent workers count passes: the second epoch draws other clips
    assert first[0] != first[1]  # consecutive batches come from different workers, seeded apart


class Stalls(torch.utils.data.IterableDataset):
    """One batch, then a read that never returns, as on a stalled network file system."""

    def __iter__(self):
        yield {"rgb": torch.zeros(2, 3, dtype=torch.uint8)}
        time.sleep(3600)


def test_a_worker_that_stalls_times_out_instead_of_hanging_the_run():
    it = iter(loader(Stalls(), workers=1, timeout=2))
    assert next(it)["rgb"].shape == (2, 3)
    with pytest.raises(RuntimeError, match="DataLoader timed out after 2 seconds"):
        next(it)
    del it


def test_each_pass_is_reproducible_and_ranks_draw_differently(shards, monkeypatch):
    urls = shard_urls(shards, "labeled")
    keys = lambda s: [b["key"] for b in s]  # noqa: E731
    base = stream(urls, seed=5)
    first, second = keys(base), keys(base)
    assert keys(stream(urls, seed=5)) == first and keys(stream(urls, seed=5, epoch=1)) == second
    monkeypatch.setenv("RANK", "1")  # what torchrun sets, and what webdataset reads first
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert keys(stream(urls, seed=5)) != first


def _rank(rank: int, shards: Path, rendezvous: Path, results) -> None:
    """One rank of a 2-process gloo group, as torch.multiprocessing.spawn starts it: its DataLoader workers
    are spawned too, so torch.distributed is not initialised inside them."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        train = loader(stream(shard_urls(shards, "labeled"), epoch_batches=3), workers=1)
        val = loader(eval_stream(shard_urls(shards, "val"), batch_size=2, clip_len=2, interval=1, size=24,
                                 reduce=1, clips=1, crops=1), workers=1)
        results.put((rank, [b["key"] for b in train], [key for b in val for key in b["key"]]))
    finally:
        dist.destroy_process_group()


def test_ranks_of_a_process_group_draw_differently_and_split_val(shards, tmp_path):
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_rank, args=(shards, tmp_path / "rendezvous", results), nprocs=2)
    (_, train0, val0), (_, train1, val1) = sorted(results.get() for _ in range(2))
    assert len(train0) == len(train1) == 3 and train0 != train1
    assert sorted(val0 + val1) == sorted(keys_of({"val"})) and val0 and val1


# -- evaluation streams ------------------------------------------------------------------------------------

def test_eval_stream_gives_every_val_video_once_with_two_workers(shards):
    data = loader(eval_stream(shard_urls(shards, "val"), batch_size=2, clip_len=4, interval=3, size=24,
                              reduce=1, clips=2, crops=3), workers=2)
    seen = []
    for batch in data:
        assert batch["rgb"].dtype == torch.uint8 and batch["rgb"].shape[1:] == (6, 4, 24, 24, 3)
        assert batch["label"].tolist() == [VIDEOS[key][0] for key in batch["key"]]
        for b, key in enumerate(batch["key"]):
            n = VIDEOS[key][1]
            k = frame_number(batch["rgb"][b].numpy())  # (crop * clips + clip, T)
            expected = np.tile(np.stack(uniform_indices(n, 4, 3, 2)), (3, 1))
            assert np.array_equal(k, expected), (key, k)
        seen += batch["key"]
    assert sorted(seen) == sorted(keys_of({"val"}))


def test_eval_shards_are_split_between_ranks(shards, monkeypatch):
    urls = shard_urls(shards, "val")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        for batch in eval_stream(urls, batch_size=4, clip_len=2, interval=1, size=12, reduce=2, clips=1, crops=1):
            assert batch["rgb"].shape[1:] == (1, 2, 12, 12, 3)
            seen += batch["key"]
    assert sorted(seen) == sorted(keys_of({"val"}))


# -- bad input ---------------------------------------------------------------------------------------------

def one_line_error(fn, *args) -> str:
    with pytest.raises(UserError) as caught:
        fn(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_folder_and_missing_set_are_user_errors(tmp_path):
    assert "no such folder" in one_line_error(shard_urls, tmp_path / "nowhere", "val")
    write_shards(tmp_path, ["labeled-000000"])
    message = one_line_error(shard_urls, tmp_path, "val")
    assert str(tmp_path) in message and "no val shards" in message
    assert shard_urls(tmp_path, "labeled") == [str(tmp_path / "labeled-000000.tar")]


def test_truncated_or_unfinished_shards_are_user_errors(tmp_path):
    write_shards(tmp_path, ["val-000000", "val-000001"])
    tar = tmp_path / "val-000001.tar"
    tar.write_bytes(tar.read_bytes()[:5000])
    message = one_line_error(shard_urls, tmp_path, "val")
    assert "val-000001.tar: 5000 bytes but its sidecar says" in message and "tgprep build" in message
    (tmp_path / "val-000001.json").unlink()
    assert "no sidecar val-000001.json" in one_line_error(shard_urls, tmp_path, "val")


def test_a_tar_damaged_after_the_check_raises_sample_error(tmp_path):
    write_shards(tmp_path, ["val-000000"])
    tar = tmp_path / "val-000000.tar"
    urls = shard_urls(tmp_path, "val")
    views = eval_stream(urls, batch_size=1, clip_len=2, interval=1, size=24, reduce=1, clips=1, crops=1)
    whole = tar.read_bytes()
    tar.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(SampleError, match=r"val-000000\.tar: member t_v1\d\.\w+ runs past the end of the file"):
        list(views)
    tar.write_bytes(b"not a tar" * 100)
    with pytest.raises(SampleError, match=r"val-000000\.tar: not a readable tar"):
        list(views)


# -- end to end --------------------------------------------------------------------------------------------

def test_stream_from_a_real_build(tmp_path):
    """Videos encoded by ffmpeg, shards by `tgprep build`: TG pairs with RGB within the JPEG error."""
    rng = np.random.default_rng(0)
    for c in ("jump", "wave"):
        (tmp_path / "videos" / c).mkdir(parents=True)
        for i in range(2):
            coarse = rng.integers(40, 100, (1, 6, 10, 3), dtype=np.uint8)  # blocks of 4x4: kind to JPEG
            background = coarse.repeat(4, axis=1).repeat(4, axis=2).repeat(12, axis=0)
            for t in range(12):
                background[t, :, 2 * t:2 * t + 6] = 160  # a bar moving right, |TG| < 128: never clipped
            encode_video(tmp_path / "videos" / c / f"v{i}.avi", background, fps=25)
    out = tmp_path / "out"
    build(BuildConfig(dataset="folder", root=str(tmp_path / "videos"), out=str(out), ratio=0.5,
                      val_fraction=0.0, videos_per_shard=2, short_side=0, workers=1))
    assert json.loads((out / "dataset.json").read_text())["videos"]["labeled"] == 2
    urls = shard_urls(out, "labeled") + shard_urls(out, "unlabeled")
    batch = next(iter(stream(urls, batch_size=4, clip_len=8, interval=1, size=24, labeled=False)))
    rgb = batch["rgb"].numpy().astype(np.float64)
    tg = tg_from_stored(batch["tg"].numpy().astype(np.float64))
    # 8 consecutive frames out of 11 TG frames: no loop seam, so TG i should be RGB i + 1 - RGB i
    diff = rgb[:, 1:] - rgb[:, :-1]
    error = np.abs(tg[:, :-1] - diff).mean()
    assert error < 3  # the JPEG errors of RGB (q95, 4:4:4) and TG (q95, 4:2:0)
    assert np.abs(tg[:, 1:] - diff).mean() > 3 * error  # paired with the wrong frame, it would be far off


def test_real_clips_of_different_shapes_batch_together(real_videos, tmp_path):
    """A wide HMDB clip (560x240) and a Kinetics clip (340x256), decoded at half scale into 112-pixel squares."""
    for c, clip in (("wave", "hmdb51/wave/RATRACE_wave_f_nm_np1_fr_goo_37.avi"),
                    ("segway", "kinetics400/using_segway/R6llTwEh07w_000000_000010.mp4")):
        (tmp_path / "videos" / c).mkdir(parents=True)
        (tmp_path / "videos" / c / Path(clip).name).symlink_to(real_videos / clip)
    out = tmp_path / "out"
    build(BuildConfig(dataset="folder", root=str(tmp_path / "videos"), out=str(out), ratio=1.0,
                      val_fraction=0.0, videos_per_shard=1, short_side=0, workers=1))
    urls = shard_urls(out, "labeled")
    batch = next(iter(stream(urls, batch_size=4, clip_len=8, interval=1, size=112, reduce=choose_reduce(240, 112))))
    assert batch["rgb"].shape == batch["tg"].shape == (4, 8, 112, 112, 3)
    rgb = batch["rgb"].numpy().astype(np.float64)
    tg = tg_from_stored(batch["tg"].numpy().astype(np.float64))
    assert np.abs(tg[:, :-1] - (rgb[:, 1:] - rgb[:, :-1])).mean() < 3  # real motion, after scaling and resizing
    views = next(iter(eval_stream(urls, batch_size=2, clip_len=2, interval=4, size=112, reduce=2, clips=1, crops=3)))
    wide = views["rgb"][[i for i, key in enumerate(views["key"]) if "RATRACE" in key][0]].float()
    assert (wide[0] - wide[2]).abs().mean() > 10  # the left and the right square of the wide frame differ


class Counting(torch.utils.data.IterableDataset):
    def __iter__(self):
        yield from (torch.tensor([i]) for i in range(1000))


def test_a_loader_whose_start_a_dead_worker_cut_short_shuts_down_without_a_traceback(monkeypatch):
    """A worker that dies while the loader starts the others trips torch's SIGCHLD handler before the iterator has
    its worker-status list; torch's own shutdown then printed an AttributeError traceback after tgtrain's line.
    Here the iterator is made whole, then put in that state; its shutdown must end its worker, silently."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    data = loader(Counting(), 1)
    next(iter(data))
    workers = list(data._iterator._workers)
    del data._iterator._workers_status  # as the iterator is when the SIGCHLD handler raises during its start
    del data
    gc.collect()
    assert not unraisable, [str(u.exc_value) for u in unraisable]
    for w in workers:
        w.join(timeout=10)
    assert not [w for w in workers if w.is_alive()]
