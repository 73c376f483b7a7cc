"""tgprep.storage against real servers on 127.0.0.1: every fault of a web server ends in a retry or in one line
naming the URL and the fix, in bounded time; the node cache fetches a shard once per node, stays within its limit
and never evicts a shard being read; hostile indexes and stores are refused."""

import hashlib
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from tgprep.storage.cache import ShardCache, size_from
from tgprep.storage.fetch import fetch
from tgprep.storage.index import RemoteShard, Storage, read_index
from tgprep.storage.place import Place, Policy, StorageError, place

# short waits, so that each fault costs the suite well under a second or two
FAST = Policy(tries=3, backoff=0.01, timeout=1.0, window=1 << 16)


def served(web, name: str, size: int = 300_000, seed: int = 0) -> tuple[str, bytes]:
    """A file of random bytes under web's folder; (its sha256, its bytes)."""
    data = os.urandom(size) if seed is None else hashlib.shake_256(f"{name}{seed}".encode()).digest(size)
    path = web.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), data


@pytest.fixture
def site(web):
    web.reset()
    yield Place(web.url)
    web.reset()


def one_line(error: pytest.ExceptionInfo, *words) -> str:
    message = str(error.value)
    assert "\n" not in message and all(w in message for w in words), message
    return message


def test_a_connection_dropped_mid_shard_resumes_with_a_range_request(web, site, tmp_path):
    digest, data = served(web, "a.tar")
    web.fail("a.tar", "drop")
    assert fetch(site, "a.tar", tmp_path / "a", len(data), digest, FAST) == digest
    assert (tmp_path / "a").read_bytes() == data
    assert web.starts["a.tar"] == [0, len(data) // 2]  # the second GET asked for the rest only


def test_a_server_that_ignores_range_is_read_again_from_the_start(web, site, tmp_path):
    digest, data = served(web, "a.tar")
    web.fail("a.tar", "drop", "ignore-range")
    assert fetch(site, "a.tar", tmp_path / "a", len(data), digest, FAST) == digest
    assert (tmp_path / "a").read_bytes() == data and web.gets["a.tar"] == 2


def test_503_then_200_succeeds(web, site, tmp_path):
    digest, data = served(web, "a.tar")
    web.fail("a.tar", 503, 503)
    assert fetch(site, "a.tar", tmp_path / "a", len(data), digest, FAST) == digest and web.gets["a.tar"] == 3


@pytest.mark.parametrize("fault, said", [(404, "not found"), (403, "access denied")])
def test_404_and_403_are_one_line_without_retries(web, site, tmp_path, fault, said):
    digest, data = served(web, "a.tar")
    web.fail("a.tar", fault)
    with pytest.raises(StorageError) as caught:
        fetch(site, "a.tar", tmp_path / "a", len(data), digest, FAST)
    one_line(caught, f"{web.url}/a.tar: {said}", "tgprep build")
    assert web.gets["a.tar"] == 1


@pytest.mark.parametrize("fault, said", [("short", f"only {300_000 - 100} bytes where 300000"),
                                         ("long", "more bytes where 300000"), ("flip", "sha256")])
def test_an_object_unlike_its_index_is_retried_then_refused(web, site, tmp_path, fault, said):
    digest, data = served(web, "a.tar")
    web.fail("a.tar", fault)  # once: the retry gets the good bytes
    assert fetch(site, "a.tar", tmp_path / "a", len(data), digest, FAST) == digest and web.gets["a.tar"] == 2
    web.fail("a.tar", fault, fault, fault)
    with pytest.raises(StorageError) as caught:
        fetch(site, "a.tar", tmp_path / "b", len(data), digest, FAST)
    one_line(caught, f"{web.url}/a.tar: ", said, "after 3 tries", "tgprep build")


def test_a_server_that_sends_a_byte_now_and_then_times_out(web, site, tmp_path):
    digest, data = served(web, "a.tar")
    web.fail("a.tar", "slow", "slow", "slow")
    start = time.monotonic()
    with pytest.raises(StorageError) as caught:
        fetch(site, "a.tar", tmp_path / "a", len(data), digest, FAST)
    one_line(caught, "sends too slowly", "after 3 tries")
    assert time.monotonic() - start < 10
    # the defaults give up on a shard well before the trainer's 600 s wait for a batch
    policy = Policy()
    assert policy.tries * policy.timeout + sum(policy.backoff * 2 ** n for n in range(policy.tries)) < 300


def test_nothing_listening_is_one_line(tmp_path):
    with pytest.raises(StorageError) as caught:
        Place("http://127.0.0.1:1").read_small("dataset.json", 1000, FAST)
    one_line(caught, "http://127.0.0.1:1/dataset.json: no answer", "after 3 tries")


def test_a_hostile_index_is_refused_before_it_is_used(web, site, tmp_path):
    good = {"status": "complete", "classes": ["a"], "videos": {"labeled": 1, "unlabeled": 0, "val": 0},
            "shards": [{"shard": "labeled-000000.tar", "set": "labeled", "samples": 1, "frames": 2, "bytes": 10,
                        "sha256": "0" * 64}]}
    cases = {"../../escape.tar": "is not a name such as", "labeled-000000.tar": "'bytes'"}
    for name, said in cases.items():
        entry = {**good["shards"][0], "shard": name, "bytes": 10**15}
        (web.folder / "dataset.json").write_text(json.dumps({**good, "shards": [entry]}))
        with pytest.raises(StorageError) as caught:
            read_index(site, FAST)
        one_line(caught, f"{web.url}/dataset.json", said)
    (web.folder / "dataset.json").write_bytes(b" " * (17 << 20))  # over MAX_DATASET_JSON_BYTES: never read whole
    with pytest.raises(StorageError) as caught:
        read_index(site, FAST)
    one_line(caught, "over the limit")
    (web.folder / "dataset.json").write_text(json.dumps({**good, "status": "planned", "shards": None}))
    with pytest.raises(StorageError) as caught:
        read_index(site, FAST)
    one_line(caught, "not finished", "tgprep build")


def test_urls_and_sizes_from_the_command_line():
    assert place("s3://bucket/prefix/").root == "s3://bucket/prefix"
    for bad in ("ftp://host/x", "s3://", "http://"):
        with pytest.raises(StorageError):
            place(bad)
    assert size_from("1.5TiB") == 3 * 2**39 and size_from("200GB") == 200 * 10**9 and size_from("500") == 500
    with pytest.raises(StorageError, match="--cache-limit"):
        size_from("lots")


# -- the node cache --------------------------------------------------------------------------------------

def _open_and_hash(cache: ShardCache, site: Place, name: str, size: int, digest: str) -> str:
    with cache.open(site, name, size, digest) as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_one_fetch_per_node_whatever_the_processes(web, site, tmp_path):
    shards = [served(web, f"s{i}.tar", 200_000) for i in range(2)]
    cache = ShardCache(str(tmp_path / "cache"), 10**9, FAST)
    work = [(cache, site, f"s{i}.tar", 200_000, digest) for _ in range(3) for i, (digest, _) in enumerate(shards)]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        assert pool.starmap(_open_and_hash, work) == [w[-1] for w in work]
    assert web.gets == {"s0.tar": 1, "s1.tar": 1}  # six processes at once, one download each
    assert sorted(p.name for p in (tmp_path / "cache").glob("*.tar")) == sorted(f"{d}.tar" for d, _ in shards)


def test_eviction_keeps_the_limit_and_spares_a_shard_being_read(web, site, tmp_path):
    size = 100_000
    shards = [served(web, f"e{i}.tar", size) for i in range(5)]
    cache = ShardCache(str(tmp_path / "cache"), int(2.5 * size), FAST)
    held = cache.open(site, "e0.tar", size, shards[0][0])  # a reader holds e0 throughout
    for i in range(1, 5):
        with cache.open(site, f"e{i}.tar", size, shards[i][0]):
            assert cache.used() <= cache.limit + size
    assert cache.copy(shards[0][0]).is_file()  # never evicted while held, though least recently used
    assert cache.copy(shards[4][0]).is_file() and not cache.copy(shards[1][0]).is_file()
    assert hashlib.sha256(held.read()).hexdigest() == shards[0][0]
    held.close()
    with cache.open(site, "e1.tar", size, shards[1][0]):
        assert not cache.copy(shards[0][0]).is_file()  # released: now it goes first


def test_a_cache_limit_below_what_the_workers_hold_is_refused_naming_the_smallest(web, site, tmp_path):
    cache = ShardCache(str(tmp_path / "cache"), 10**6, FAST)
    with pytest.raises(StorageError) as caught:
        cache.check_room(8, 300_000, "4 loader workers")
    one_line(caught, "--cache-limit 1MB cannot hold the 8 shards that 4 loader workers read at once",
             "give --cache-limit 2.4MB or more")


def test_a_shard_changed_on_the_server_is_refused_and_not_cached(web, site, tmp_path):
    digest, data = served(web, "c.tar")
    (web.folder / "c.tar").write_bytes(data[:-1] + b"x")
    cache = ShardCache(str(tmp_path / "cache"), 10**9, FAST)
    shard = RemoteShard(site, "c.tar", len(data), digest, cache)
    with pytest.raises(StorageError) as caught:
        shard.open()
    one_line(caught, f"{web.url}/c.tar: sha256", "tgprep build")
    assert not list((tmp_path / "cache").glob("*.tar*"))  # nothing half-fetched left behind


# -- an object store (moto's S3 server) ------------------------------------------------------------------

def test_a_missing_bucket_and_missing_credentials_are_one_line(s3, tmp_path, monkeypatch):
    with pytest.raises(StorageError) as caught:
        place("s3://no-such-bucket-here/h").check_bucket()
    one_line(caught, "s3://no-such-bucket-here/h: the bucket no-such-bucket-here does not exist")
    with pytest.raises(StorageError) as caught:
        read_index(place("s3://no-such-bucket-here/h"), FAST)
    one_line(caught, "s3://no-such-bucket-here/h/dataset.json", "bucket does not exist")
    bucket = s3.bucket()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorageError) as caught:
        Storage(options=(("skip_instance_cache", "true"),)).place(bucket).sizes()
    one_line(caught, bucket, "no usable credentials", "AWS_ACCESS_KEY_ID")


def test_an_object_store_file_goes_up_whole_and_comes_back(s3, tmp_path):
    where = place(s3.bucket() + "/p")
    local = tmp_path / "x.tar"
    local.write_bytes(os.urandom(1 << 20))
    where.put(local, "x.tar")
    assert where.sizes() == {"x.tar": 1 << 20}
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    assert fetch(where, "x.tar", tmp_path / "back", 1 << 20, digest, Policy(window=300_000)) == digest
    with pytest.raises(StorageError) as caught:
        fetch(where, "gone.tar", tmp_path / "gone", 10, None, FAST)
    one_line(caught, f"{where.root}/gone.tar: not found")
    assert Path(tmp_path / "back").read_bytes() == local.read_bytes()
