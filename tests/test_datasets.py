"""The dataset adapters on the official split files, the real clips, and small trees made here."""

import re
import shutil
from collections import Counter

import numpy as np
import pytest

from tgprep.config import BuildConfig
from tgprep.datasets import ADAPTERS, scan
from tgprep.datasets.folder import val_indices
from tgprep.errors import UserError
from tgprep.video import encode_video

HMDB_CLIPS = {  # file -> (class, label, split 1 id), from the realdata README
    "RATRACE_wave_f_nm_np1_fr_goo_37.avi": ("wave", 50, "1"),
    "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi": ("wave", 50, "0"),
    "TrumanShow_wave_f_nm_np1_fr_med_26.avi": ("wave", 50, "2"),
    "Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": ("cartwheel", 1, "1"),
}


@pytest.fixture(scope="module")
def tiny_avi(tmp_path_factory):
    """A real 4-frame video; trees in these tests hold copies of it (scanning never decodes)."""
    path = tmp_path_factory.mktemp("media") / "tiny.avi"
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    encode_video(path, frames, fps=8)
    return path


def split_counts(listing):
    """split -> number of listed videos, on disk or not."""
    return Counter(r.split for r in listing.train + listing.val + listing.missing)


# --- official split files, nothing on disk -------------------------------------------------------

@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_split_files_give_the_official_counts(tmp_path, real_annotations, split):
    counts = {}
    for pool in ("official", "all-non-test"):
        listing = scan(BuildConfig("hmdb51", str(tmp_path), annotations=str(real_annotations), split=split, pool=pool))
        assert len(listing.classes) == 51 and not listing.train and not listing.val
        assert not [n for n in listing.notes if n.startswith("warning")]
        counts[pool] = split_counts(listing)
    assert counts["official"] == {"train": 3570, "val": 1530}
    assert counts["all-non-test"] == {"train": 5236, "val": 1530}  # 3570 train + 1666 unused


def test_edited_split_files_are_flagged_against_the_manifest(tmp_path, real_annotations):
    shutil.copytree(real_annotations / "hmdb51" / "testTrainMulti_7030_splits", tmp_path / "splits")
    wave = tmp_path / "splits" / "wave_test_split1.txt"
    wave.write_text("".join(line for line in wave.read_text().splitlines(keepends=True) if not line.endswith(" 1 \n")))
    (tmp_path / "splits" / "chew_test_split1.txt").unlink()  # wave loses its 70 train lines, chew all 70 / 30 / 9
    notes = scan(BuildConfig("hmdb51", str(tmp_path), pool="official")).notes
    warnings = [n for n in notes if n.startswith("warning")]
    assert len(warnings) == 2 and "1 classes: chew" in warnings[0]
    assert "lists hold train 3430 / test 1500 / unused 1657 videos where the official release has " \
           "train 3570 / test 1530 / unused 1666" in warnings[1]


def test_ucf101_split1_counts_and_handstand_case(tmp_path, real_annotations, tiny_avi):
    (tmp_path / "HandstandPushups").mkdir()
    shutil.copy(tiny_avi, tmp_path / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi")
    listing = scan(BuildConfig("ucf101", str(tmp_path), annotations=str(real_annotations)))
    assert len(listing.classes) == 101 and split_counts(listing) == {"train": 9537, "val": 3783}
    [record] = listing.train
    assert (record.class_name, record.label, record.path) == (
        "HandstandPushups", 36, "HandstandPushups/v_HandStandPushups_g08_c01.avi")
    assert listing.unlisted == 0
    assert listing.notes[0] == "ucf101 split 1: 1 of 13320 listed videos found (train 1 of 9537, val 0 of 3783); 13319 missing"


def test_kinetics_val_csv(tmp_path, real_annotations):
    listing = scan(BuildConfig("kinetics400", str(tmp_path), annotations=str(real_annotations)))
    assert len(listing.classes) == 400 and split_counts(listing) == {"val": 19906}
    assert any("no train CSV" in note for note in listing.notes)
    assert not [n for n in listing.notes if n.startswith("warning")]


# --- the real clips -----------------------------------------------------------------------------

def test_hmdb51_real_clips(real_videos, real_annotations):
    for pool, pool_ids in (("official", {"1"}), ("all-non-test", {"1", "0"})):
        listing = scan(BuildConfig("hmdb51", str(real_videos / "hmdb51"), annotations=str(real_annotations), pool=pool))
        got = {r.path.split("/")[-1]: (r.class_name, r.label, r.split) for r in listing.train + listing.val}
        want = {name: (cls, label, "train" if split_id in pool_ids else "val")
                for name, (cls, label, split_id) in HMDB_CLIPS.items() if split_id in pool_ids | {"2"}}
        assert got == want
        assert len(listing.missing) == sum(split_counts(listing).values()) - len(want)
        assert all(re.fullmatch(r"hmdb51_[A-Za-z0-9_-]+", r.key) for r in listing.train + listing.val)


def test_ucf101_real_clips_and_unlisted(real_videos, real_annotations):
    listing = scan(BuildConfig("ucf101", str(real_videos), annotations=str(real_annotations)))
    assert [(r.key, r.label, r.split) for r in listing.train] == [
        ("ucf101_v_SoccerJuggling_g23_c01", 83, "train"), ("ucf101_v_SoccerJuggling_g24_c01", 83, "train")]
    assert not listing.val and len(listing.missing) == 13318
    assert listing.unlisted == 4 + 3 + 5  # the HMDB, Kinetics and other/ files under the same root


def test_kinetics_real_clips(real_videos, real_annotations):
    listing = scan(BuildConfig("kinetics400", str(real_videos / "kinetics400"), annotations=str(real_annotations)))
    assert not listing.train and len(listing.missing) == 19903
    assert [(r.key, r.class_name, r.split) for r in listing.val] == [
        (f"kinetics400_{clip}", "using segway", "val")
        for clip in ("R6llTwEh07w_000000_000010", "SOX5yA1l24A_000299_000309", "WUzgd7C1pWA_000101_000111")]
    assert listing.val[0].label == listing.classes.index("using segway")


# --- trees made here ----------------------------------------------------------------------------

AWKWARD = ["Beim_Radschlag_(Nick)_xD", "run, fast & far", "take#1", "take_1", "a.b"]


def make_synthetic(root, tiny_avi, lines=None):
    """A two-class synthetic tree; lines: class -> split-1 lines (default: every awkward name per class)."""
    (root / "classes.txt").write_text("run\njump\n")
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for cls in ("run", "jump"):
        (root / cls).mkdir()
        for i, name in enumerate(AWKWARD):
            shutil.copy(tiny_avi, root / cls / f"{cls} {name}.avi")
        default = [f"{cls} {name}.avi {i % 3} " for i, name in enumerate(AWKWARD)]
        (splits / f"{cls}_test_split1.txt").write_text("\n".join((lines or {}).get(cls, default)) + "\n")


def test_synthetic_tree_labels_pools_and_keys(tmp_path, tiny_avi):
    make_synthetic(tmp_path, tiny_avi)
    shutil.copy(tiny_avi, tmp_path / "run" / "extra.avi")
    (tmp_path / "jump" / "jump take#1.avi").unlink()
    for pool, train_ids in (("official", {1}), ("all-non-test", {1, 0})):
        listing = scan(BuildConfig("synthetic", str(tmp_path), pool=pool))
        assert listing.classes == ["run", "jump"] and listing.unlisted == 1
        assert [r.path for r in listing.missing] == ["jump/jump take#1.avi"]
        records = listing.train + listing.val + listing.missing
        for r in records:
            split_id = AWKWARD.index(r.path.split(" ", 1)[1][:-4]) % 3
            split = "train" if split_id in train_ids else "val"
            assert (r.label, r.split) == ({"run": 0, "jump": 1}[r.class_name], split)
        keys = [r.key for r in records]
        assert len(set(keys)) == len(keys) and all(re.fullmatch(r"synthetic_[A-Za-z0-9_-]+", k) for k in keys)
        assert listing.train == sorted(listing.train)


def test_folder_split_is_seeded_per_class(tmp_path, tiny_avi):
    for cls, count in (("a", 10), ("b", 1), ("c", 6)):
        (tmp_path / cls / "deeper").mkdir(parents=True)
        for i in range(count):
            shutil.copy(tiny_avi, tmp_path / cls / "deeper" / f"v({i}).avi")
    shutil.copy(tiny_avi, tmp_path / "loose.avi")
    listing = scan(BuildConfig("folder", str(tmp_path), seed=3))
    assert listing.classes == ["a", "b", "c"] and listing.unlisted == 1
    val = Counter(r.class_name for r in listing.val)
    assert val == {"a": 3, "c": 2} and Counter(r.class_name for r in listing.train) == {"a": 7, "b": 1, "c": 4}
    # Class c's draw does not move when class a grows, and moves with the seed.
    for i in range(3):
        shutil.copy(tiny_avi, tmp_path / "a" / f"more{i}.avi")
    again = scan(BuildConfig("folder", str(tmp_path), seed=3))
    assert [r for r in again.val if r.class_name == "c"] == [r for r in listing.val if r.class_name == "c"]
    other_seed = scan(BuildConfig("folder", str(tmp_path), seed=6))
    assert [r for r in other_seed.val if r.class_name == "c"] != [r for r in listing.val if r.class_name == "c"]


def test_val_indices_keeps_a_training_video():
    rng = np.random.default_rng(0)
    assert len(val_indices(10, 0.3, rng)) == 3 and val_indices(1, 0.3, rng) == set()
    assert len(val_indices(2, 0.9, rng)) == 1 and val_indices(5, 0.0, rng) == set()


# --- errors -------------------------------------------------------------------------------------

def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(UserError, match="choose one of " + ", ".join(ADAPTERS)):
        scan(BuildConfig("hmdb", str(tmp_path)))
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'nope'}: no such folder")):
        scan(BuildConfig("hmdb51", str(tmp_path / "nope")))


def test_no_annotation_files_says_where_and_names_the_flag(tmp_path):
    for dataset in ("hmdb51", "ucf101", "kinetics400"):
        where = re.escape(str(tmp_path))
        with pytest.raises(UserError, match=f"^{where}: no .* found here or two levels down; .*--annotations"):
            scan(BuildConfig(dataset, str(tmp_path)))


def test_malformed_split_line_names_file_and_line(tmp_path, tiny_avi):
    make_synthetic(tmp_path, tiny_avi, {"jump": ["jump a.b.avi 1 ", "jump take#1.avi train"]})
    with pytest.raises(UserError, match=r"jump_test_split1\.txt, line 2: .*'jump take#1\.avi train'"):
        scan(BuildConfig("synthetic", str(tmp_path)))


def test_video_listed_twice_is_refused(tmp_path, tiny_avi):
    make_synthetic(tmp_path, tiny_avi, {"jump": ["run take#1.avi 1 "]})
    with pytest.raises(UserError, match="same sample key"):
        scan(BuildConfig("synthetic", str(tmp_path)))


def test_class_unknown_to_the_manifest(tmp_path):
    (tmp_path / "juggle_test_split1.txt").write_text("x.avi 1 \n")
    with pytest.raises(UserError, match=r"juggle_test_split1\.txt: class 'juggle' is not one of the 51 classes"):
        scan(BuildConfig("hmdb51", str(tmp_path)))
    (tmp_path / "val.csv").write_text('label,youtube_id,time_start,time_end,split\n"using segway",abc,1,11,val\n'
                                      "juggling,def,2,12,val\n")
    with pytest.raises(UserError, match=r"val\.csv, line 3: label 'juggling' is not one of the 400 classes"):
        scan(BuildConfig("kinetics400", str(tmp_path)))


def test_ucf101_label_disagreeing_with_class_index(tmp_path, real_annotations):
    lists = tmp_path / "ucfTrainTestlist"
    shutil.copytree(real_annotations / "ucf101" / "ucfTrainTestlist", lists)
    with (lists / "trainlist01.txt").open("a", newline="") as file:
        file.write("Archery/v_Archery_g99_c01.avi 4\r\n")
    with pytest.raises(UserError, match=r"trainlist01\.txt, line 9538: label 4 is not Archery"):
        scan(BuildConfig("ucf101", str(tmp_path)))
