"""Shared fixtures: the real clips and split files kept beside the project, and small made-up videos."""

import os
from pathlib import Path

import pytest

from tests.trained import ltg_run, shards  # noqa: F401  (the trainer tests' micro build and run, once a session)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def _shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        if os.environ.get("TG_REQUIRE_SHARED") == "1":
            pytest.fail(f"{path} is missing and TG_REQUIRE_SHARED=1")
        pytest.skip(f"{path} is not here")
    return path


@pytest.fixture(scope="session")
def real_videos() -> Path:
    """../shared/realdata/videos: real HMDB-51, UCF-101 and Kinetics clips, and awkward files in other/."""
    return _shared("videos")


@pytest.fixture(scope="session")
def real_annotations() -> Path:
    """../shared/realdata/annotations: the official split and label files of the three datasets."""
    return _shared("annotations")
