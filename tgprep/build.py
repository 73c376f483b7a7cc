"""`tgprep build`: scan the dataset, draw the splits, write manifests, then run the shard plan; resumable."""

import hashlib
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import av
import numpy
import PIL
import simplejpeg
from tqdm import tqdm

import tgprep
from tgprep import datasets, limits, schema, synth
from tgprep.config import BuildConfig
from tgprep.datasets.common import Listing, Record
from tgprep.errors import MissingVideosError, UserError
from tgprep.executor import LocalExecutor, WorkerError
from tgprep.output import (Output, clear_output, clear_stage, default_stage, output_lock, output_of,
                           remove_temporaries, resume, stopped)
from tgprep.sample import make_sample
from tgprep.shards import SETS, ShardTask, plan_shards, write_json_atomic, write_shard
from tgprep.splits import Splits, class_counts, draw_labeled, read_video_list, select_listed, write_list
from tgprep.storage.index import Storage
from tgprep.storage.place import Place
from tgprep.video import VideoStream
from tgprep.video_sample import make_video_sample


@dataclass
class BuildReport:
    """What a build did, for the summary the CLI prints and for programs that call build()."""

    out: str                                             # the output folder or URL
    listing: Listing
    splits: Splits
    sidecars: list[dict] = field(default_factory=list)   # one per shard, finished now or earlier
    failures: list[dict] = field(default_factory=list)   # every video that is in no shard, with its reason
    resumed: int = 0                                     # shards an earlier run had finished
    frames_written: int = 0                              # frames decoded and stored by this run
    seconds: float = 0.0

    @property
    def videos(self) -> int:
        return (len(self.splits.labeled) + len(self.splits.unlabeled) + len(self.splits.val)
                + len(self.listing.missing) + len(self.listing.unusable))


def build(config: BuildConfig, command: list[str] | None = None, storage: Storage = Storage()) -> BuildReport:
    """Run a whole build (or, with config.dry_run, everything up to the shards) and return its report. config.out
    is a folder, or an s3:// or gs:// URL written through a local stage (tgprep.output)."""
    start = time.perf_counter()
    if config.dataset == "synthetic" and not config.root:
        config.root = str(default_synthetic_root())
        synth.generate(Path(config.root), synth.SynthConfig())
    output = output_of(storage.place(config.out), config.stage)
    try:
        report = _build(config, output, command)
    except WorkerError as e:
        if isinstance(e.error, OSError):
            raise stopped(output, e.error) from None
        if isinstance(e.error, UserError):  # an upload that could not be made, said in one line
            raise e.error from None
        e.error.add_note(f"raised in a worker:\n{e.trace}")  # a bug, not the machine: keep its traceback
        raise e.error from None
    except OSError as e:
        raise stopped(output, e) from None
    report.seconds = time.perf_counter() - start
    return report


def _build(config: BuildConfig, output: Output, command: list[str] | None) -> BuildReport:
    if output.remote:
        output.place.check_bucket()
    output.stage.mkdir(parents=True, exist_ok=True)
    with output_lock(output.stage, output.place.url()):
        clear_stage(output)
        listing = datasets.scan(config)
        check_missing(listing, config, output)
        splits = choose_splits(listing, config)
        tasks = plan_shards(splits, config.videos_per_shard, config.seed)
        complete = prepare_output(output, config, tasks)
        if not (config.dry_run and complete):
            write_manifests(output, listing, splits, config, command, tasks)
        report = BuildReport(output.place.url(), listing, splits)
        if not config.dry_run:
            run_plan(report, output, tasks, config)
            finish_output(report, output, config, command, tasks)
    return report


def default_synthetic_root() -> Path:
    """Where `--dataset synthetic` without --root keeps the generated videos (made once, then reused)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tgprep" / "synthetic"


def check_missing(listing: Listing, config: BuildConfig, output: Output) -> None:
    """Listed videos that are not on disk stop the build unless --allow-missing, and their list is written to
    missing.txt; a build that goes on removes that list (failures.jsonl holds them then)."""
    per_split = ", ".join(f"{n} {s}" for s, n in sorted(Counter(r.split for r in listing.missing).items()))
    what = f"{len(listing.missing)} listed videos are not under {config.root} ({per_split})"
    if listing.missing and not config.allow_missing:
        write_list(output.stage / "missing.txt", listing.missing)
        output.publish("missing.txt")
        raise MissingVideosError(f"{what}; list in {output.place.url('missing.txt')}; add --allow-missing to build "
                                 "without them")
    output.remove("missing.txt")
    if not listing.missing:
        return
    listing.notes.append(f"warning: {what}; building without them (see failures.jsonl)")
    train, val = {r.label for r in listing.train}, {r.label for r in listing.val}
    no_video = [name for label, name in enumerate(listing.classes) if label not in train | val]
    no_train = [name for label, name in enumerate(listing.classes) if label in val - train]
    for names, what in ((no_video, "have no video left"), (no_train, "have val videos but no training video")):
        if names:  # the first few: a subset of Kinetics would name 399 classes
            more = f" and {len(names) - 8} more (per_class in dataset.json)" if len(names) > 8 else ""
            listing.notes.append(f"warning: {len(names)} classes {what}: {', '.join(names[:8])}{more}")


def choose_splits(listing: Listing, config: BuildConfig) -> Splits:
    if not listing.train:
        raise UserError(f"{config.root}: no video of the {config.dataset} training pool was found; "
                        "check --root, --annotations and --split")
    if config.labeled_list:
        path = Path(config.labeled_list)
        labeled, unlabeled = select_listed(listing.train, read_video_list(path), path, listing.missing)
    elif config.ratio is not None:
        labeled, unlabeled = draw_labeled(listing.train, config.ratio, config.seed)
    else:
        raise UserError("say which training videos are labeled: --ratio R (e.g. 0.4) or --labeled-list FILE")
    return Splits(labeled, unlabeled, listing.val)


def prepare_output(output: Output, config: BuildConfig, tasks: list[ShardTask]) -> bool:
    """Resume what this output holds if it was made by the same settings; refuse otherwise, or --overwrite.
    Returns whether the output already holds this very build, complete."""
    where = output.place.url("dataset.json")
    try:
        previous = read_dataset(output.place)
    except FileNotFoundError:
        previous = None
    except (OSError, ValueError) as e:
        if not config.overwrite:
            raise UserError(f"{where}: {e}; use --overwrite to rebuild this output, or another --out") from None
        previous = None
    if previous is not None and not config.overwrite:
        old = previous.get("config", {})
        # a setting added since that build was made had its default then
        changed = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in config.identity().items()
                   if old.get(k, getattr(BuildConfig, k, None)) != v]
        if not changed and previous.get("plan") != plan_digest(tasks):
            changed = ["the videos found (the plan of shards differs)"]
        if changed:
            raise UserError(f"{output.place.url()}: holds a build made with {', '.join(changed[:3])}; "
                            "use another --out, or --overwrite to replace it")
    if config.overwrite and not config.dry_run:
        clear_output(output)
    remove_temporaries(output.stage)  # left by a killed run
    return previous is not None and not config.overwrite and previous.get("status") == "complete"


def read_dataset(place: Place) -> dict:
    """The output's dataset.json, checked; FileNotFoundError when there is none yet."""
    value = limits.parse_json(place.read_small("dataset.json", limits.MAX_DATASET_JSON_BYTES),
                              limits.MAX_DATASET_JSON_BYTES)
    schema.check_dataset(value)
    return value


def write_manifests(output: Output, listing: Listing, splits: Splits, config: BuildConfig,
                    command: list[str] | None, tasks: list[ShardTask]) -> None:
    for set_name, records in zip(SETS, (splits.labeled, splits.unlabeled, splits.val)):
        write_list(output.stage / "manifests" / f"{set_name}.txt", records)
    write_json_atomic(output.stage / "dataset.json", dataset_json(listing, splits, config, command, tasks, None))
    output.publish(*(f"manifests/{name}.txt" for name in SETS), "dataset.json")


def dataset_json(listing: Listing, splits: Splits, config: BuildConfig, command, tasks, shards) -> dict:
    """The output root's description: how it was made, what is in it, and whether the shards are complete."""
    sets = dict(zip(SETS, (splits.labeled, splits.unlabeled, splits.val)))
    return {
        "status": "complete" if shards is not None else "planned",
        "command": command,
        "config": config.settings(),
        "plan": plan_digest(tasks),
        "classes": listing.classes,
        "videos": {name: len(records) for name, records in sets.items()},
        "per_class": {name: class_counts(records, listing.classes) for name, records in sets.items()},
        "missing": len(listing.missing),
        "unusable": len(listing.unusable),  # on disk but not buildable (see failures.jsonl)
        "unlisted": listing.unlisted,
        "notes": listing.notes,
        "shards": shards,
        "versions": versions(),
    }


def plan_digest(tasks: list[ShardTask]) -> str:
    text = "\n".join(f"{t.name} {' '.join(r.key for r in t.records)}" for t in tasks)
    return hashlib.sha256(text.encode()).hexdigest()


def versions() -> dict:
    return {"tgprep": tgprep.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "pillow": PIL.__version__, "simplejpeg": simplejpeg.__version__, "av": av.__version__}


def run_plan(report: BuildReport, output: Output, tasks: list[ShardTask], config: BuildConfig) -> None:
    """Write every shard that is not finished yet (or no longer matches its sidecar), with a progress bar."""
    report.sidecars, todo = resume(output, tasks, config.resume_check, config.workers)
    report.resumed = len(report.sidecars)
    # absolute paths: a task may run in another process, on another node, from another folder; a task that
    # uploads (a bucket's output) stages its shard on its own node: --stage as given, else that node's default
    stage = output.stage.resolve() if not output.remote or config.stage else None
    work = partial(_shard_work, out=stage, root=Path(config.root).resolve(), config=config,
                   place=output.place if output.remote else None)
    total = sum(len(t.records) for t in todo)
    with tqdm(total=total, unit="video", desc="build", dynamic_ncols=True, disable=None) as bar:
        frames = 0

        def progress(event: tuple) -> None:
            nonlocal frames
            kind, value, *line = event
            if kind == "frames":
                frames += value
                bar.set_postfix_str(f"{frames / max(bar.format_dict['elapsed'], 1e-9):.0f} frames/s", refresh=False)
            elif kind == "done":
                bar.update(1)
            elif kind == "retry":  # the shard starts again: its videos will be counted again
                bar.update(-value)
                bar.write(f"note: {line[0]}", file=sys.stderr)

        try:
            report.sidecars += executor(config).run(work, todo, progress)
        finally:
            remove_temporaries(output.stage)  # a stopped or failed run leaves nothing half-written
    report.frames_written = sum(s["frames"] for s in report.sidecars[report.resumed:])
    report.sidecars.sort(key=lambda s: s["shard"])


def executor(config: BuildConfig):
    """The engine that runs the shard tasks: this machine's cores, or a Ray cluster (an optional extra)."""
    if config.executor != "ray":
        return LocalExecutor(config.workers, config.timeout)
    try:
        from tgprep.ray_executor import RayExecutor
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'tgprep[ray]'") from None
    return RayExecutor(config.ray_address, config.timeout)


def finish_output(report: BuildReport, output: Output, config: BuildConfig, command, tasks) -> None:
    report.failures = [{"key": r.key, "path": r.path, "set": r.split, "reason": "missing: listed but not on disk"}
                       for r in report.listing.missing]
    report.failures += [{"key": r.key, "path": r.path, "set": r.split, "reason": reason}
                        for r, reason in report.listing.unusable]
    report.failures += [f for s in report.sidecars for f in s["failures"]]
    lines = "".join(json.dumps(f, sort_keys=True) + "\n" for f in report.failures)
    (output.stage / "failures.jsonl").write_text(lines)
    shards = [{k: s[k] for k in ("shard", "set", "samples", "frames", "bytes", "sha256")} for s in report.sidecars]
    write_json_atomic(output.stage / "dataset.json",
                      dataset_json(report.listing, report.splits, config, command, tasks, shards))
    output.publish("failures.jsonl", "dataset.json")  # the index, last: after every sidecar


# -- executing the plan ---------------------------------------------------------------------------------

def _shard_work(task: ShardTask, progress, out: Path | None, root: Path, config: BuildConfig,
                place: Place | None = None) -> dict:
    """One shard task: stream each video through make_sample, write the tar and its sidecar into `out`, and for a
    bucket's output (place) upload them from there, tar then sidecar (out None: this node's default stage). It
    reports the video it is on and its frames as they decode, so that its executor knows what a dead or silent
    worker was doing, and a long video is never taken for a hung one."""
    out = out or default_stage(place)
    out.mkdir(parents=True, exist_ok=True)

    def make(record: Record, with_label: bool) -> dict:
        progress(("video", record.key))
        try:
            with VideoStream(root / record.path, config.short_side, config.timeout,
                             on_frames=lambda n: progress(("frames", n))) as video:
                if config.store == "video":
                    return make_video_sample(record, video, fps=config.fps, with_label=with_label, spool=out,
                                             keyframe_interval=config.keyframe_interval)
                return make_sample(record, video, fps=config.fps, quality=config.quality, with_label=with_label,
                                   spool=out)
        finally:
            progress(("done", record.key))

    sidecar = write_shard(out, task, make)
    if place is not None:
        Output(place, out).publish(f"{task.name}.tar", f"{task.name}.json")
    return sidecar


def summary(report: BuildReport, dry_run: bool) -> str:
    """What the build prints at the end: the dataset notes, then the plan (dry run) or what was written."""
    table = plan_table(report) if dry_run else written_table(report)
    return "\n".join(report.listing.notes + table)


def plan_table(report: BuildReport) -> list[str]:
    sets = dict(zip(SETS, (report.splits.labeled, report.splits.unlabeled, report.splits.val)))
    missing = Counter(r.split for r in report.listing.missing)
    lines = [f"{'set':<10} {'videos':>8} {'classes':>8}"]
    lines += [f"{name:<10} {len(records):>8} {len({r.label for r in records}):>8}" for name, records in sets.items()]
    return lines + [f"missing: {missing.get('train', 0)} of the training pool, {missing.get('val', 0)} of val; "
                    f"{report.listing.unlisted} videos on disk in no list",
                    f"dry run: manifests and dataset.json written to {report.out}"]


def written_table(report: BuildReport) -> list[str]:
    failed = Counter(f["set"] for s in report.sidecars for f in s["failures"])  # decoding failures only
    lines = [f"{'set':<10} {'videos':>8} {'frames':>10} {'MB':>9} {'failed':>7}"]
    for name in SETS:
        done = [s for s in report.sidecars if s["set"] == name]
        lines.append(f"{name:<10} {sum(s['samples'] for s in done):>8} {sum(s['frames'] for s in done):>10} "
                     f"{sum(s['bytes'] for s in done) / 1e6:>9.1f} {failed.get(name, 0):>7}")
    decoded = report.videos - len(report.listing.missing)
    n_failed = sum(failed.values()) + len(report.listing.unusable)  # unusable: set aside before any shard
    lines.append(f"{n_failed} of {decoded} videos failed (see failures.jsonl)" if n_failed
                 else f"all {decoded} videos written")
    if report.listing.missing:
        lines.append(f"{len(report.listing.missing)} listed videos were missing (also in failures.jsonl)")
    return lines + [f"{len(report.sidecars)} shards ({report.resumed} from an earlier run) in {report.out}; "
                    f"{report.seconds:.1f} s, {report.frames_written / max(report.seconds, 1e-9):.0f} frames/s"]
