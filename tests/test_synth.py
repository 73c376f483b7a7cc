"""The synthetic motion dataset: files, determinism, split files, and what the classes do and do not show."""

import hashlib
import json
import re
from dataclasses import asdict, replace

import av
import numpy as np
import pytest

from tgprep.errors import UserError
from tgprep.synth import (MOTIONS, SynthConfig, generate, mirror, motion_params, render, split_ids,
                          start_state, trajectory)

TINY = SynthConfig(classes=3, videos_per_class=4, frames=10, width=32, height=24)


def hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "tiny"
    assert generate(out, TINY, workers=1)["made"]
    return out


def test_same_seed_same_bytes_whatever_the_workers(tiny, tmp_path):
    generate(tmp_path / "again", TINY, workers=2)
    assert hashes(tmp_path / "again") == hashes(tiny)
    generate(tmp_path / "other", replace(TINY, seed=1), workers=2)
    first, other = hashes(tiny), hashes(tmp_path / "other")
    assert all(other[name] != first[name] for name in other if name.endswith(".avi"))


def test_layout_classes_and_counts(tiny):
    names = list(MOTIONS)[:3]
    assert (tiny / "classes.txt").read_text().splitlines() == names
    for name in names:
        assert sorted(p.name for p in (tiny / name).iterdir()) == [f"{name}_{i:03d}.avi" for i in range(4)]
    assert json.loads((tiny / "synth.json").read_text())["config"] == asdict(TINY)


def test_videos_decode_to_what_render_drew(tiny):
    with av.open(str(tiny / "move_up" / "move_up_002.avi")) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    rng = np.random.default_rng([TINY.seed, 0, list(MOTIONS).index("move_up"), 2])
    drawn = render(motion_params("move_up", rng), TINY, rng)
    assert decoded.shape == drawn.shape == (10, 24, 32, 3)
    assert np.abs(decoded.astype(int) - drawn).mean() < 8


def test_split_files_in_the_official_format(tiny):
    folder = tiny / "testTrainMulti_7030_splits"
    assert len(list(folder.iterdir())) == 3 * 3
    for name in list(MOTIONS)[:3]:
        draws = []
        for split in (1, 2, 3):
            text = (folder / f"{name}_test_split{split}.txt").read_text()
            lines = text.splitlines()
            assert text.endswith(" \n") and all(re.fullmatch(r"\S+\.avi [012] ", line) for line in lines)
            assert sorted(line.split()[0] for line in lines) == [f"{name}_{i:03d}.avi" for i in range(4)]
            draws.append([line.split()[1] for line in lines])
        assert all({"1", "2"} <= set(ids) for ids in draws)


def test_split_shares_like_hmdb():
    splits = [split_ids(40, np.random.default_rng(s)) for s in range(3)]
    for ids in splits:
        assert np.bincount(ids).tolist() == [4, 25, 11]  # 10 % unused, then 70 / 30
    assert not np.array_equal(splits[0], splits[1])


def test_reruns_and_refusals(tiny, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tiny.rglob("*")}
    assert generate(tiny, TINY)["made"] is False  # same knobs: left as it is
    assert {p: p.stat().st_mtime_ns for p in tiny.rglob("*")} == before
    with pytest.raises(UserError, match="other settings"):
        generate(tiny, replace(TINY, frames=12))
    killed = tmp_path / "killed"
    (killed / "stand_still").mkdir(parents=True)
    (killed / "stand_still" / "stand_still_000.avi").write_bytes(b"half")
    with pytest.raises(UserError, match="no synth.json"):
        generate(killed, TINY)
    with pytest.raises(UserError, match="even"):
        generate(tmp_path / "odd", SynthConfig(width=33))


def support(name, draws=400):
    """The smallest and largest value motion_params draws for each parameter of a class."""
    params = [motion_params(name, np.random.default_rng([7, i])) for i in range(draws)]
    return {k: (min(p[k] for p in params), max(p[k] for p in params)) for k in params[0]}


@pytest.mark.parametrize("name", list(MOTIONS))
def test_every_class_is_closed_under_a_horizontal_flip(name):
    # The flipped video has x -> 1 - x and angle -> -angle. Its class is unchanged when
    # mirror(params) reproduces that trajectory and lies where motion_params draws for the class.
    low_high = support(name)
    for i in range(40):
        rng = np.random.default_rng([8, i])
        params, start = motion_params(name, rng), start_state(rng)
        flipped = mirror(params)
        for key, (low, high) in low_high.items():
            slack = 0.05 * (high - low)
            assert low - slack <= flipped[key] <= high + slack, (key, flipped[key], low, high)
        seen = trajectory(params, start, 64)
        mirrored = trajectory(flipped, {**start, "x": 1 - start["x"], "angle": -start["angle"]}, 64)
        np.testing.assert_allclose(mirrored["x"], 1 - seen["x"], atol=1e-9)
        np.testing.assert_allclose(mirrored["angle"], -seen["angle"], atol=1e-9)
        for key in ("y", "size", "swap"):
            np.testing.assert_allclose(mirrored[key], seen[key], atol=1e-9)


def test_first_frame_is_the_same_for_every_class():
    # Motion is drawn apart from the looks, so with the same looks every class starts from the very same frame:
    # shape, colours, texture, size, position and background say nothing about the class.
    config = SynthConfig(frames=3, width=48, height=32)
    firsts = [render(motion_params(name, np.random.default_rng(1)), config, np.random.default_rng(2))[0]
              for name in MOTIONS]
    assert all(np.array_equal(first, firsts[0]) for first in firsts)
    later = [render(motion_params(name, np.random.default_rng(1)), config, np.random.default_rng(2))[2]
             for name in ("stand_still", "move_up", "rotate")]
    assert not np.array_equal(later[0], later[1]) and not np.array_equal(later[0], later[2])


def sampled(name, key, seed):
    """One parameter of the trajectory seen by the trainer: 64 frames sampled every 8 frames."""
    rng = np.random.default_rng(seed)
    return trajectory(motion_params(name, rng), start_state(rng), 8 * 64)[key][::8]


def dominant_frequency(series):
    spectrum = np.abs(np.fft.rfft(series - series.mean()))
    return np.fft.rfftfreq(len(series))[spectrum.argmax()]


def test_motions_survive_sampling_every_8_frames():
    for seed in range(20):
        fast = max(dominant_frequency(sampled("oscillate_fast", key, seed)) for key in ("x", "y"))
        slow = max(dominant_frequency(sampled("oscillate_slow", key, seed)) for key in ("x", "y"))
        assert 0.25 < fast < 0.4 and 0.12 < slow < 0.22  # cycles per sample: apart, and far from 0
        turn = np.degrees(np.abs(np.diff(sampled("rotate", "angle", seed))))
        assert np.all((turn > 20) & (turn < 45))  # under half the 90-degree symmetry of a square or cross
        assert np.mean(np.diff(sampled("blink", "swap", seed).astype(int)) != 0) > 0.4
