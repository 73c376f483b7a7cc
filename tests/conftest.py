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


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on 127.0.0.1 for the session, its endpoint and made-up credentials in the environment (which
    subprocesses inherit)."""
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    from tests.servers import S3

    server = S3()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (("AWS_ENDPOINT_URL", server.url), ("AWS_ACCESS_KEY_ID", "test"),
                            ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
            patch.setenv(name, value)
        yield server
    server.close()


@pytest.fixture(scope="session")
def web(tmp_path_factory):
    """A folder served over HTTP on 127.0.0.1 with Range support, misbehaving on demand (tests/servers.py)."""
    from tests.servers import Web

    server = Web(tmp_path_factory.mktemp("web"))
    yield server
    server.close()
