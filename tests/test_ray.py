"""`--executor ray` on a local Ray cluster of 2 CPUs started here: the same bytes as a local build, a killed Ray
worker loses nothing, a video that kills its worker twice is recorded. Ray starts once, for this module only."""

import json
import os
import signal
import threading
import time
from functools import partial
from pathlib import Path

import pytest

from tests.test_build import config, folder_dataset, tar_members  # noqa: F401 (a fixture)
from tests.test_executor import _dies_on, reference, videos  # noqa: F401 (fixtures)
from tgprep.build import _shard_work, build
from tgprep.shards import plan_shards

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory):
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(tmp_path_factory.mktemp("ray")),
             logging_level="warning")
    yield
    ray.shutdown()


def shard_workers() -> list[int]:
    """Pids of the Ray worker processes running a shard task now (Ray names them after the function)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(b"ray::_run_shard"):
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_ray_builds_the_same_bytes_as_one_local_worker(folder_dataset, tmp_path):  # noqa: F811
    build(config(folder_dataset, tmp_path / "local", workers=1))
    build(config(folder_dataset, tmp_path / "ray", executor="ray"))
    local, remote = tmp_path / "local", tmp_path / "ray"
    names = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != "dataset.json")
    assert names == sorted(p.name for p in remote.iterdir() if p.is_file() and p.name != "dataset.json")
    assert all((local / n).read_bytes() == (remote / n).read_bytes() for n in names)
    meta = {name: json.loads((tmp_path / name / "dataset.json").read_text()) for name in ("local", "ray")}
    assert meta["ray"]["config"].pop("executor") == "ray" and meta["local"]["config"].pop("executor") == "local"
    for m in meta.values():
        m["config"].pop("out")
    assert meta["ray"] == meta["local"]
    again = build(config(folder_dataset, tmp_path / "ray", executor="ray"))  # and it resumes the same
    assert again.resumed == len(again.sidecars) and again.frames_written == 0


def test_a_build_survives_a_killed_ray_worker(videos, reference, tmp_path):  # noqa: F811
    killed = []

    def kill_one():
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            pids = shard_workers()
            if pids and list((tmp_path / "out").glob("*-*.json")):  # a shard done, others running
                time.sleep(0.05)
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one)
    killer.start()
    report = build(config(videos, tmp_path / "out", videos_per_shard=1, executor="ray"))
    killer.join()
    assert killed and not report.failures
    assert tar_members(tmp_path / "out") == reference


# A crash gets a long --timeout: on a busy machine Ray may take seconds to see the death and start the task again,
# and a short one would call that silence a hang.
@pytest.mark.parametrize("how, timeout, reason", [(signal.SIGSEGV, 60, "decoder crashed (its Ray worker died)"),
                                                  (signal.SIGSTOP, 3, "timed out after 3 s (worker killed)")])
def test_a_video_that_kills_its_ray_worker_twice_is_recorded(folder_dataset, tmp_path, how, timeout, reason):  # noqa: F811
    from tgprep.ray_executor import RayExecutor

    settings = config(folder_dataset, tmp_path, videos_per_shard=3)
    tasks = plan_shards(build(config(folder_dataset, tmp_path, videos_per_shard=3, dry_run=True)).splits, 3, 0)
    victim = tasks[0].records[0]
    work = partial(_shard_work, out=tmp_path, root=folder_dataset, config=settings)
    events = []
    sidecars = RayExecutor(timeout=timeout).run(partial(_dies_on, victim=victim.key, how=how, work=work), tasks,
                                          events.append)
    assert [e[0] for e in events].count("retry") == 2, [e for e in events if e[0] == "retry"]
    failed = [f for s in sidecars for f in s["failures"] if f["key"] == victim.key]
    assert failed == [{"key": victim.key, "path": victim.path, "set": tasks[0].set, "reason": reason}]
    assert sorted(s["shard"] for s in sidecars) == sorted(f"{t.name}.tar" for t in tasks)


def test_ray_tasks_upload_their_own_shards_into_a_bucket(folder_dataset, s3, tmp_path):  # noqa: F811
    """No shared file system: each task stages its shard, uploads tar then sidecar; the driver writes the index.
    The endpoint and credentials travel as storage options, since the Ray workers started before this test."""
    import fsspec

    from tgprep.storage.index import Storage

    storage = Storage(options=(("endpoint_url", s3.url), ("key", "test"), ("secret", "test")))
    url = s3.bucket() + "/ray"
    build(config(folder_dataset, tmp_path / "local", workers=1))
    build(config(folder_dataset, url, executor="ray", stage=str(tmp_path / "stage")), storage=storage)
    fs, key = fsspec.filesystem("s3"), url.removeprefix("s3://")
    fs.invalidate_cache()
    tars = sorted(p.name for p in (tmp_path / "local").glob("*.tar"))
    assert sorted(n.rsplit("/", 1)[-1] for n in fs.find(key) if n.endswith(".tar")) == tars
    assert all(fs.cat_file(f"{key}/{n}") == (tmp_path / "local" / n).read_bytes() for n in tars)
    assert json.loads(fs.cat_file(f"{key}/dataset.json"))["status"] == "complete"
    assert not list((tmp_path / "stage").glob("*.tar"))  # each shard left the stage once uploaded
