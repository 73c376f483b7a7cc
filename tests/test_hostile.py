"""Hostile input, as a stranger would hand it over: options, file trees, list files, shards, sidecars and
dataset.json, each made here with the standard library. Every one must end in one line and the right exit
code, never a traceback, and add less than 500 MB of memory to the process that reads it."""

import io
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_build import moving_bar
from tgprep import limits
from tgprep.build import build
from tgprep.cli import main as tgprep_main
from tgprep.config import BuildConfig
from tgprep.inspection import iter_samples
from tgprep.shards import file_sha256
from tgprep.video import encode_video
from tgtrain.cli import main as tgtrain_main
from tgtrain.config import make_config, to_toml

BIN = Path(sys.executable).parent
MEMORY_BAR_MB = 500  # what a hostile input may add to the reading process, at most (the bar)
# A model of a few thousand parameters on 16x16 clips of 4 frames (as in test_engine): one epoch in a second.
MICRO = dict(width=4, blocks=(1, 1, 1, 1), proj_dim=8, size=16, load_size=16, clip_len=4, frame_interval=2,
             batch_size=2, epochs=1, workers=0, warmup_epochs=1, supervised_epochs=1, method="supervised")


def one_line(result, code: int, *words: str) -> str:
    """The one line a command printed on stderr for its refusal, checked: exit code, no traceback, the words."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.output
    return lines[0]


def problems(result, name: str, *words: str) -> None:
    """verify's verdict: exit code 1, no traceback, one line per problem, each naming its file first, and one
    naming `name` (a shard, a sidecar or dataset.json) with the words."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(re.match(r"[\w.-]+\.(tar|json): ", line) for line in lines), result.stderr
    assert any(all(word in line for word in (name, *words)) for line in lines), (words, result.stderr)


def _status(field: str) -> int:
    """A /proc/self/status figure in KB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


@contextmanager
def added_memory():
    """Measures the peak resident memory a block adds, in MB (the kernel's high-water mark, reset first).
    Meanwhile the address space is capped a few GB above its size, so that a regression fails here with
    MemoryError rather than by taking the machine's memory."""
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_status("VmSize") * 1024 + (4 << 30), hard))
    found = {}
    try:
        yield found
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        found["mb"] = (_status("VmHWM") - before) / 1024


def tgprep(*args):
    return CliRunner().invoke(tgprep_main, [str(a) for a in args])


def tgtrain(*args):
    return CliRunner().invoke(tgtrain_main, [str(a) for a in args])


# -- options and list files -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """root/<class>/<video>: 3 classes x 4 short videos of 64x48."""
    root = tmp_path_factory.mktemp("videos")
    for c, name in enumerate(("jump", "run", "wave")):
        (root / name).mkdir()
        for i in range(4):
            encode_video(root / name / f"v{i}.avi", moving_bar(8, seed=10 * c + i), fps=25)
    return root


@pytest.mark.parametrize("args, words", [
    (["--videos-per-shard", "0"], ["--videos-per-shard", "1 or more"]),
    (["--videos-per-shard", "-1"], ["--videos-per-shard"]),
    (["--workers", "-1"], ["--workers", "0 for one per core"]),
    (["--seed", "-1"], ["--seed"]),
    (["--fps", "0"], ["--fps", "e.g. --fps 10"]),
    (["--fps", "-2"], ["--fps"]),
    (["--timeout", "0"], ["--timeout"]),
    (["--timeout", "-1"], ["--timeout"]),
    (["--quality", "0"], ["--quality", "1 to 100"]),
    (["--quality", "101"], ["--quality"]),
    (["--short-side", "-1"], ["--short-side"]),
    (["--ratio", "0"], ["--ratio", "e.g. --ratio 0.4"]),
    (["--ratio", "1.5"], ["--ratio"]),
    (["--val-fraction", "1"], ["--val-fraction"]),
    (["--split", "4"], ["--split"]),
])
def test_an_option_out_of_range_is_one_line_naming_it(videos, tmp_path, args, words):
    base = ["build", "--dataset", "folder", "--root", videos, "--out", tmp_path / "o"]
    if "--ratio" not in args:
        base += ["--ratio", "0.5"]
    one_line(tgprep(*base, *args), 2, *words)
    assert not (tmp_path / "o").exists()  # refused before any work


def test_a_ray_address_that_nothing_answers_is_one_line(videos, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    result = tgprep("build", "--dataset", "folder", "--root", videos, "--out", tmp_path / "o", "--ratio", "0.5",
                    "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")
    one_line(result, 2, f"--ray-address 127.0.0.1:{port}", "nothing answers", "ray start --head")
    assert time.monotonic() - started < 30


def test_paths_are_checked_before_any_work(videos, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ["build", "--dataset", "folder", "--ratio", "0.5"]
    one_line(tgprep(*base, "--root", videos, "--out", a_file), 2, "--out", "is a file")
    one_line(tgprep(*base, "--root", videos, "--out", a_file / "sub"), 2, "--out", "cannot be made")
    one_line(tgprep(*base, "--root", tmp_path / "nope", "--out", tmp_path / "o"), 2, "--root", "does not exist")
    one_line(tgprep("build", "--dataset", "folder", "--out", tmp_path / "o", "--ratio", "0.5"), 2, "--root")
    one_line(tgprep("build", "--dataset", "folder", "--root", videos, "--out", tmp_path / "o",
                    "--labeled-list", tmp_path), 2, "--labeled-list", "is a directory")
    one_line(tgprep("synth", "--out", a_file), 2, "--out", "is a file")
    one_line(tgprep("synth", "--out", tmp_path / "s", "--videos-per-class", "1"), 2, "--videos-per-class")
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_labeled_lists_that_cannot_be_used(videos, tmp_path):
    base = ["build", "--dataset", "folder", "--root", videos, "--out", tmp_path / "o"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    one_line(tgprep(*base, "--labeled-list", empty), 2, "empty.txt", "empty")
    listed = tmp_path / "list.txt"
    listed.write_text("jump/v0.avi 0\n")
    one_line(tgprep(*base, "--labeled-list", listed, "--ratio", "0.4"), 2, "--ratio", "--labeled-list")
    assert not (tmp_path / "o").exists()
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"jump/v0.avi 0\ncaf\xe9/v1.avi 1\n")  # bytes kept: the entry names a file "caf\xe9"
    one_line(tgprep(*base, "--labeled-list", latin1), 2, "latin1.txt", "1 entries name no video", "caf\\udce9")


# -- the files under --root -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def awkward_build(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A build, by the installed command in a child process (a FIFO opened would block it: the timeout says
    so), of a tree with a class folder and a file whose names are not UTF-8, a name with a newline, a FIFO,
    a link to /dev/zero, a broken link and an empty class folder."""
    root, out = tmp_path_factory.mktemp("awkward"), tmp_path_factory.mktemp("awkward-out")
    raw = os.fsencode(root)
    for c, name in enumerate((b"plain", b"caf\xe9")):
        os.mkdir(raw + b"/" + name)
        for i in range(3):
            video = moving_bar(6, seed=c * 3 + i, size=(427, 240))
            encode_video(root / "tmp.avi", video, fps=8)
            os.replace(root / "tmp.avi", raw + b"/" + name + (b"/v%d\xff.avi" % i if c else b"/v%d.avi" % i))
    encode_video(root / "plain" / "new\nline.avi", moving_bar(6, seed=9), fps=8)
    os.mkfifo(root / "plain" / "fifo.avi")
    os.symlink("/dev/zero", root / "plain" / "zero.avi")
    os.symlink(root / "gone.avi", root / "plain" / "dangling.avi")
    (root / "empty").mkdir()
    run = subprocess.run([BIN / "tgprep", "build", "--dataset", "folder", "--root", root, "--out", out,
                          "--ratio", "0.5", "--val-fraction", "0.25", "--workers", "1", "--short-side", "0"],
                         capture_output=True, text=True, timeout=120)
    return out, run


def test_every_file_under_root_is_a_shard_or_a_failure(awkward_build):
    out, run = awkward_build
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    failures = {f["path"]: f["reason"] for f in map(json.loads, (out / "failures.jsonl").read_text().splitlines())}
    assert sorted(failures) == ["plain/dangling.avi", "plain/fifo.avi", "plain/new\nline.avi", "plain/zero.avi"]
    assert "FIFO" in failures["plain/fifo.avi"] and "never opened" in failures["plain/fifo.avi"]
    assert "device (through a link)" in failures["plain/zero.avi"]
    assert "broken link" in failures["plain/dangling.avi"]
    assert "line break" in failures["plain/new\nline.avi"]
    assert "4 of 10 videos failed" in run.stdout
    assert "hold no video file and are not classes: empty" in run.stdout
    # the names that are not UTF-8 went through like any other: keys of their own, byte-exact manifest lines
    keys = [k for tar in sorted(out.glob("*.tar")) for k in json.loads(tar.with_suffix(".json").read_text())["keys"]]
    assert len(keys) == 6 and all(k.isascii() and "." not in k for k in keys)
    lines = b"".join((out / "manifests" / f"{s}.txt").read_bytes() for s in ("labeled", "unlabeled", "val"))
    assert sorted(lines.splitlines()) == sorted([b"caf\xe9/v%d\xff.avi 0" % i for i in range(3)]
                                                + [b"plain/v%d.avi 1" % i for i in range(3)])
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["classes"] == ["caf\udce9", "plain"] and dataset["unusable"] == 4


def test_a_manifest_with_such_names_reads_back_as_a_labeled_list(awkward_build, tmp_path):
    out, _ = awkward_build
    root = Path(json.loads((out / "dataset.json").read_text())["config"]["root"])
    again = tgprep("build", "--dataset", "folder", "--root", root, "--out", tmp_path / "o", "--val-fraction", "0.25",
                   "--labeled-list", out / "manifests" / "labeled.txt", "--dry-run")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "o" / "manifests" / "labeled.txt").read_bytes() == (out / "manifests" / "labeled.txt").read_bytes()


# -- shards, sidecars and dataset.json from a stranger ----------------------------------------------------------

@pytest.fixture(scope="module")
def good(videos, tmp_path_factory) -> Path:
    """A real build of `videos`, one shard per set: the material the hostile shards are cut from."""
    out = tmp_path_factory.mktemp("good")
    build(BuildConfig(dataset="folder", root=str(videos), out=str(out), ratio=0.5, val_fraction=0.25,
                      videos_per_shard=100, short_side=0, workers=1))
    return out


@pytest.fixture(scope="module")
def micro_toml(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "micro.toml"
    path.write_text(to_toml(make_config("tiny", data="unused", out="unused", **MICRO)))
    return path


def pax(name: str, data: bytes, **headers) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.pax_headers = len(data), {k: str(v) for k, v in headers.items()}
    return info, data


def write_shard(tar_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    """A tar of these members and a sidecar that describes it truly, so only the members are hostile."""
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    keys = list(dict.fromkeys(info.name.partition(".")[0] for info, _ in members))
    tar_path.with_suffix(".json").write_text(json.dumps({
        "shard": tar_path.name, "set": "labeled", "samples": len(keys), "frames": 0, "classes": {},
        "bytes": tar_path.stat().st_size, "sha256": file_sha256(tar_path), "keys": keys, "failures": []}))


def describe_in_sidecar(tar_path: Path) -> None:
    """Make the sidecar beside a replaced tar true again (bytes, sha256), so only the tar is hostile."""
    side = json.loads(tar_path.with_suffix(".json").read_text())
    side.update(bytes=tar_path.stat().st_size, sha256=file_sha256(tar_path))
    tar_path.with_suffix(".json").write_text(json.dumps(side))


def sample_members(sample: dict, meta_changes: dict | None = None, json_bytes: bytes | None = None,
                   **fields) -> list[tuple[tarfile.TarInfo, bytes]]:
    """A real sample's members, its .json changed or replaced, fields added or replaced (None drops one)."""
    meta = {**json.loads(sample["json"]), **(meta_changes or {})}
    data = {"json": json_bytes if json_bytes is not None else json.dumps(meta).encode(),
            **{k: v for k, v in sample.items() if k not in ("__key__", "json")}, **fields}
    return [pax(f"{sample['__key__']}.{field}", value) for field, value in sorted(data.items()) if value is not None]


def giant_jpeg_header(sample: dict) -> dict:
    """The .rgb with its first JPEG's frame header (SOF0) rewritten to claim 65000 x 65000 pixels: a decoder
    that trusted it would allocate 12 GB."""
    offsets = json.loads(sample["json"])["rgb_offsets"]
    rgb = bytearray(sample["rgb"])
    sof = rgb.index(b"\xff\xc0", 0, offsets[1])
    rgb[sof + 5:sof + 9] = (65000).to_bytes(2, "big") * 2
    return {"rgb": bytes(rgb)}


def interleaved(sample: dict) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Two samples whose members alternate (a.cls b.cls a.json b.json ...), as no tar writer groups them."""
    first, second = sample_members(sample), sample_members({**sample, "__key__": sample["__key__"] + "x"})
    return [member for pair in zip(first, second) for member in pair]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def huge_pax_header(tar_path: Path) -> None:
    """A tar whose first header is a pax header claiming 100 GB of records (base-256 size, as GNU tar writes)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 100 << 30
    tar_path.write_bytes(header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096)


# name: (make the labeled shard from a real sample, verify's words, inspect's exit code, inspect --png's,
#        tgtrain's words; None: it works)
SHARDS = {
    "json-20MB": (lambda s: sample_members(s, {"pad": "x" * (20 << 20)}), "over the limit", 2, 2, "over the limit"),
    "json-50MB-nested": (lambda s: sample_members(s, json_bytes=nested(25 << 20)), "over the limit", 2, 2,
                         "over the limit"),
    "json-nested": (lambda s: sample_members(s, json_bytes=nested(100_000)), "nested too deep", 2, 2, "nested too deep"),
    # the shuffle buffer holds 256 samples: 4 MB each that were kept would be 1 GB
    "extra-member-4MB": (lambda s: sample_members(s, pad=b"\0" * (4 << 20)), None, 0, 0, None),
    "cls-1MB": (lambda s: sample_members(s, cls=b"1" * (1 << 20)), "over the limit", 0, 2, "over the limit"),
    "frame-1e9": (lambda s: sample_members(s, {"width": 10**9, "height": 10**9}), "'width' is 1000000000", 0, 2,
                  "'width' is 1000000000"),
    "frame-1e15": (lambda s: sample_members(s, {"width": 10**15, "height": 10**15}), "'width'", 0, 2, "'width'"),
    "frames-1e6": (lambda s: sample_members(s, {"frames": 10**6, "tg_frames": 10**6}), "'frames' is 1000000", 0, 2,
                   "'frames' is 1000000"),
    "pixels-4096x4096": (lambda s: sample_members(s, {"width": 4096, "height": 4096}), "pixels per frame", 0, 2,
                         "pixels per frame"),
    "label-99": (lambda s: sample_members(s, {"label": 99}, cls=b"99"), "'label' is 99", 0, 0, "'label' is 99"),
    "label-1e30": (lambda s: sample_members(s, {"label": 10**30}, cls=b"1" + b"0" * 30), "'label' is", 0, 2,
                   "'label' is"),
    "pax-10TB": (lambda s: [(info, data) if not info.name.endswith(".rgb") else pax(info.name, data, size=10**13)
                            for info, data in sample_members(s)], "past the end", 2, 2, "runs past the end"),
    "bad-offsets": (lambda s: sample_members(s, {"rgb_offsets": [0, 10**30]}), "rgb_offsets", 0, 2, "rgb_offsets"),
    # what held before, and must keep holding
    "jpeg-65000x65000": (lambda s: sample_members(s, **giant_jpeg_header(s)), "not a readable JPEG", 0, 2,
                         "not a readable JPEG"),
    "interleaved": (interleaved, "appears twice", 2, 2, " member; "),  # the halves lack one member or another
    "cls-not-a-number": (lambda s: sample_members(s, cls=b"x1"), ".cls b'x1' is not its label", 0, 0,
                         ".cls b'x1' is not its label"),
    "no-sample-fields": (lambda s: [pax("../evil.json", b"{}"), pax("/abs/x.pad", b"x")], "not a sample field",
                         2, 2, "holds no sample fields"),
}


@pytest.fixture(scope="module")
def hostile(good, tmp_path_factory) -> dict[str, Path]:
    """name -> a copy of the good output whose labeled shard is that case's single hostile sample."""
    sample = next(iter_samples(good / "labeled-000000.tar"))
    made = {}
    for name, (members, *_) in SHARDS.items():
        out = tmp_path_factory.mktemp(name)
        shutil.copytree(good, out, dirs_exist_ok=True)
        write_shard(out / "labeled-000000.tar", members(sample))
        made[name] = out
    out = tmp_path_factory.mktemp("pax-header-100GB")
    shutil.copytree(good, out, dirs_exist_ok=True)
    huge_pax_header(out / "labeled-000000.tar")
    describe_in_sidecar(out / "labeled-000000.tar")
    made["pax-header-100GB"] = out
    return made


@pytest.mark.parametrize("name", [*SHARDS, "pax-header-100GB"])
def test_a_hostile_shard_is_one_line_in_bounded_memory(hostile, micro_toml, tmp_path, name):
    out = hostile[name]
    _, verify_words, inspect_code, png_code, train_words = SHARDS.get(name, (None, "not a readable tar", 2, 2, "not a readable tar"))
    with added_memory() as verified:
        result = tgprep("verify", out)
    if verify_words is None:
        assert result.exit_code == 0, result.output
    else:
        problems(result, "labeled-000000.tar", verify_words)
    with added_memory() as inspected:
        result = tgprep("inspect", out)
    assert result.exit_code == inspect_code and "Traceback" not in result.output, result.output
    if inspect_code:
        one_line(result, 2, "labeled-000000.tar")
    with added_memory() as drawn:
        result = tgprep("inspect", out / "labeled", "--random", "1", "--png", tmp_path / "sheet.png")
    assert result.exit_code == png_code and "Traceback" not in result.output, result.output
    if png_code:
        one_line(result, 2, "labeled-000000.tar")
    with added_memory() as trained:
        result = tgtrain("run", "--data", out, "--preset", "tiny", "--config", micro_toml, "--out", tmp_path / "run",
                         "--device", "cpu")
    if train_words is None:
        assert result.exit_code == 0, result.output
    else:
        assert "labeled-000000.tar" in one_line(result, 2, train_words)
    added = {"verify": verified["mb"], "inspect": inspected["mb"], "png": drawn["mb"], "train": trained["mb"]}
    assert max(added.values()) < MEMORY_BAR_MB, added


@pytest.mark.parametrize("name, content, words", [
    ("dataset.json", b"{}", "'classes' is not a list of class names"),
    ("dataset.json", nested(100_000), "nested too deep"),
    ("dataset.json", b'{"classes": ["a"], "videos": {"labeled": 1, "unlabeled": 0, "val": -1}, "status": "complete"}',
     "'val'"),
    ("dataset.json", b"\xff\xfe", "not valid JSON"),
    ("labeled-000000.json", nested(100_000), "nested too deep"),
    ("labeled-000000.json", b'{"shard": "labeled-000000.tar"}', "'samples'"),
    ("labeled-000000.json", b" " * (limits.MAX_SIDECAR_BYTES + 1), "over the limit"),
])
def test_a_hostile_dataset_json_or_sidecar_is_one_line(good, micro_toml, tmp_path, name, content, words):
    out = tmp_path / "out"
    shutil.copytree(good, out)
    (out / name).write_bytes(content)
    problems(tgprep("verify", out), name, words)
    one_line(tgtrain("run", "--data", out, "--preset", "tiny", "--config", micro_toml, "--out", tmp_path / "run",
                     "--device", "cpu"), 2, name, words)


def test_the_installed_commands_print_one_line(hostile, tmp_path):
    """As a user meets them: the installed programs in a child process, stderr one line, no traceback."""
    for command, code in (["tgprep", "verify"], 1), (["tgprep", "inspect"], 2):
        run = subprocess.run([BIN / command[0], *command[1:], hostile["pax-10TB"]], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == code and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert "Traceback" not in run.stderr


def test_a_damaged_dataset_json_in_out_stops_a_resume(good, videos, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(good, out)
    (out / "dataset.json").write_bytes(nested(100_000))
    args = ["build", "--dataset", "folder", "--root", videos, "--out", out, "--ratio", "0.5", "--val-fraction", "0.25",
            "--videos-per-shard", "100", "--short-side", "0", "--workers", "1"]
    one_line(tgprep(*args), 2, "dataset.json", "nested too deep", "--overwrite")
    assert tgprep(*args, "--overwrite").exit_code == 0


def test_a_fifo_named_like_a_shard_is_never_opened(good, micro_toml, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(good, out)
    (out / "val-000000.tar").unlink()
    os.mkfifo(out / "val-000000.tar")

    def opened(*_):
        raise TimeoutError("blocked on the FIFO: it was opened")

    previous = signal.signal(signal.SIGALRM, opened)
    signal.alarm(60)  # interrupts a blocked open(): the test fails instead of hanging
    try:
        problems(tgprep("verify", out), "val-000000.tar: missing")
        one_line(tgtrain("run", "--data", out, "--preset", "tiny", "--config", micro_toml, "--out", tmp_path / "run",
                         "--device", "cpu"), 2, "val-000000.tar", "not a regular file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
