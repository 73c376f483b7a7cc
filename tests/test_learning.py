"""The RGB network learns the synthetic motions from labels: the proof's ceiling, small enough for a test.

bench/accuracy.py measures the whole table (the supervised ceiling, and supervised, fixmatch and ltg with few
labels); this checks its first premise within a test's budget: with every label, the tiny preset's RGB 3D-CNN
tells motions apart on videos it never saw, well above chance, where a single frame cannot (the set's looks are
drawn the same way for every class).
"""

import json

from tgprep.build import build
from tgprep.config import BuildConfig
from tgprep.synth import SynthConfig, generate
from tgtrain.config import make_config
from tgtrain.engine import train


def test_tiny_supervised_rgb_network_learns_the_synthetic_motions(tmp_path):
    generate(tmp_path / "synthetic", SynthConfig(classes=3, videos_per_class=40, frames=32))
    build(BuildConfig(dataset="synthetic", root=str(tmp_path / "synthetic"), out=str(tmp_path / "shards"),
                      ratio=1.0, videos_per_shard=8))
    config = make_config("tiny", data=str(tmp_path / "shards"), out=str(tmp_path / "run"), method="supervised",
                         batch_size=8, epochs=10)
    done = train(config)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in records if "epoch" in r]  # not the step records
    assert len(records) == 10 and done["chance"] == 1 / 3
    assert max(r["val_top1"] for r in records[-3:]) >= 70, records  # chance is 33 %; about 33 val videos
