"""Labeled / unlabeled selection: per-class counts, seeds, order independence, published lists."""

import random

import pytest

from tgprep.datasets.common import Record
from tgprep.errors import UserError
from tgprep.splits import class_counts, draw_labeled, labeled_count, read_video_list, select_listed, write_list


def pool(sizes):
    """A training pool with sizes[c] videos in class c, names with spaces as real datasets have."""
    return [Record(f"d_c{c}_{i}", f"class {c}/video {c}_{i}.avi", f"class {c}", c, "train")
            for c, n in enumerate(sizes) for i in range(n)]


def test_labeled_count_rounds_half_up_and_keeps_one():
    assert labeled_count(10, 0.45) == 5      # round() would give 4 (to even)
    assert labeled_count(10, 0.44) == 4
    assert labeled_count(3, 0.1) == 1        # at least one per class
    assert labeled_count(7, 1.0) == 7
    assert labeled_count(70, 0.4) == 28


def test_draw_gives_per_class_counts():
    videos = pool([10, 3, 70, 1])
    labeled, unlabeled = draw_labeled(videos, 0.4, seed=0)
    assert class_counts(labeled, ["class 0", "class 1", "class 2", "class 3"]) == \
        {"class 0": 4, "class 1": 1, "class 2": 28, "class 3": 1}
    assert sorted(labeled + unlabeled) == sorted(videos)
    assert not {r.key for r in labeled} & {r.key for r in unlabeled}


def test_draw_is_seeded_and_ignores_listing_order():
    videos = pool([20, 20, 20])
    first, _ = draw_labeled(videos, 0.3, seed=0)
    shuffled = videos[:]
    random.Random(1).shuffle(shuffled)
    assert draw_labeled(shuffled, 0.3, seed=0)[0] == first
    assert draw_labeled(videos, 0.3, seed=1)[0] != first


def test_a_class_draw_does_not_depend_on_other_classes():
    both, _ = draw_labeled(pool([20, 20]), 0.5, seed=3)
    alone, _ = draw_labeled([r for r in pool([20, 20]) if r.label == 1], 0.5, seed=3)
    assert [r for r in both if r.label == 1] == alone


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5])
def test_ratio_outside_range_is_a_user_error(ratio):
    with pytest.raises(UserError, match="--ratio"):
        draw_labeled(pool([5]), ratio, seed=0)


def test_list_formats(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"class 0/video 0_1.avi 0\r\n"           # MMAction2 video list, CRLF
                     b"class 1/video 1_2 140 1\n"              # rawframe list: folder, frames, label
                     b"video 2_3.avi\n\n")                     # bare path
    assert read_video_list(path) == ["class 0/video 0_1.avi", "class 1/video 1_2", "video 2_3.avi"]
    labeled, unlabeled = select_listed(pool([3, 3, 4]), read_video_list(path), path, missing=[])
    assert [r.key for r in labeled] == ["d_c0_1", "d_c1_2", "d_c2_3"]
    assert len(unlabeled) == 7


def test_written_list_reads_back_to_the_same_split(tmp_path):
    videos = pool([12, 8, 5])
    labeled, unlabeled = draw_labeled(videos, 0.25, seed=7)
    write_list(tmp_path / "labeled.txt", labeled)
    again = select_listed(videos, read_video_list(tmp_path / "labeled.txt"), tmp_path / "labeled.txt", missing=[])
    assert again == (labeled, unlabeled)


def test_same_name_in_two_classes_is_told_apart_by_folder(tmp_path):
    videos = [Record("d_a_x", "a/x.avi", "a", 0, "train"), Record("d_b_x", "b/x.avi", "b", 1, "train")]
    (tmp_path / "l.txt").write_text("b/x.avi 1\n")
    assert select_listed(videos, read_video_list(tmp_path / "l.txt"), tmp_path / "l.txt", [])[0] == [videos[1]]


def test_unknown_and_repeated_entries_are_errors(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("class 0/video 0_0.avi 0\nnope/not_here.avi 3\n")
    with pytest.raises(UserError, match="not_here"):
        select_listed(pool([2]), read_video_list(path), path, missing=[])
    path.write_text("class 0/video 0_0.avi 0\nvideo 0_0 0\n")
    with pytest.raises(UserError, match="more than once"):
        select_listed(pool([2]), read_video_list(path), path, missing=[])


def test_entries_naming_missing_videos_are_dropped(tmp_path):
    path = tmp_path / "l.txt"
    path.write_text("class 0/video 0_0.avi 0\ngone/gone.avi 0\n")
    gone = Record("d_gone", "gone/gone.avi", "class 0", 0, "train")
    labeled, _ = select_listed(pool([2]), read_video_list(path), path, missing=[gone])
    assert [r.key for r in labeled] == ["d_c0_0"]
