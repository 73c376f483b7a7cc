"""The `tgprep` command line: parse, call one library function, print. No logic lives here."""

import json
import os
import sys
from pathlib import Path

import click

from tgprep import datasets as dataset_adapters
from tgprep import inspection, synth, verification
from tgprep.build import build as run_build
from tgprep.build import default_synthetic_root, summary
from tgprep.config import BuildConfig
from tgprep.errors import OneLineErrors, UserError
from tgprep.locate import find_shards
from tgprep.splits import read_video_list
from tgprep.storage.options import storage_options
from tgprep.storage.place import place


class _WithFix:
    """A click type whose refusal also says what to give instead, so that the one error line teaches."""

    def __init__(self, *args, fix: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.fix = fix

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as e:
            self.fail(f"{e.message.rstrip('.')}; {self.fix}", param, ctx)


class Whole(_WithFix, click.IntRange):
    """A whole number in a range."""


class Real(_WithFix, click.FloatRange):
    """A number in a range."""


class Existing(_WithFix, click.Path):
    """A file or folder that must be there."""


class OutFolder(click.Path):
    """A folder to write into: it may not exist yet, but nothing on the way to it may be a file. With
    `buckets`, an s3:// or gs:// URL too (checked when the build starts)."""

    def __init__(self, buckets: bool = False):
        super().__init__(path_type=Path)
        self.buckets = buckets

    def convert(self, value, param, ctx):
        if self.buckets and "://" in str(value):
            return place(value).root
        path = super().convert(value, param, ctx)
        if path.exists() and not path.is_dir():
            self.fail(f"{path} is a file; give a folder (it is made if missing)", param, ctx)
        above = next((p for p in path.parents if p.exists()), Path("."))
        if not above.is_dir():
            self.fail(f"{above} is a file, so {path} cannot be made under it; give another folder", param, ctx)
        if not os.access(path if path.exists() else above, os.W_OK | os.X_OK):
            self.fail(f"{path if path.exists() else above} is not writable by you; give another folder", param, ctx)
        return path


def _labeled_list(ctx, param, value):
    """Read the list as soon as it is given, so a bad or empty one stops the build before any work."""
    if value is not None:
        read_video_list(Path(value))
    return value


WORKERS = Whole(min=0, fix="give a number of processes, or 0 for one per core")
SEED = Whole(min=0, fix="give a seed of 0 or more")


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tgprep")
def main():
    """Turn an action-recognition dataset into temporal-gradient WebDataset shards.

    \b
    tgprep synth --out data/synthetic                     # a small motion dataset, no download
    tgprep build --dataset hmdb51 --root HMDB --ratio 0.4 --out shards/hmdb51-40
    tgprep inspect shards/hmdb51-40                       # what is in it
    tgprep inspect shards/hmdb51-40 --random 2 --png sheet.png
    tgprep verify shards/hmdb51-40                        # re-read and check every shard
    """
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints escaped, not as a crash
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


@main.command()
def datasets():
    """List the dataset adapters and what each expects on disk."""
    for name, adapter in dataset_adapters.ADAPTERS.items():
        click.echo(click.style(name, bold=True))
        click.echo("".join(f"  {line}\n" for line in adapter.DESCRIPTION.strip().splitlines()))


@main.command(name="synth")
@click.option("--out", required=True, type=OutFolder(), help="Folder to write (HMDB-51 layout).")
@click.option("--classes", default=synth.SynthConfig.classes, show_default=True, help="How many motion classes.",
              type=Whole(min=1, max=len(synth.MOTIONS), fix=f"choose 1 to {len(synth.MOTIONS)} classes"))
@click.option("--videos-per-class", default=synth.SynthConfig.videos_per_class, show_default=True,
              type=Whole(min=2, fix="every class needs a train and a test video: give 2 or more"))
@click.option("--frames", default=synth.SynthConfig.frames, show_default=True, help="Frames per video.",
              type=Whole(min=2, fix="a temporal gradient needs two frames: give 2 or more"))
@click.option("--width", default=synth.SynthConfig.width, show_default=True,
              type=Whole(min=16, max=4096, fix="give an even width from 16 to 4096 pixels"))
@click.option("--height", default=synth.SynthConfig.height, show_default=True,
              type=Whole(min=16, max=4096, fix="give an even height from 16 to 4096 pixels"))
@click.option("--noise", default=synth.SynthConfig.noise, show_default=True, help="Pixel noise level.",
              type=Real(min=0, max=255, fix="give a noise level in grey levels, e.g. 4"))
@click.option("--distractors", default=synth.SynthConfig.distractors, show_default=True,
              type=Whole(min=0, max=100, fix="give 0 to 100 distractors"),
              help="Moving objects whose motion says nothing about the class.")
@click.option("--speed", default=synth.SynthConfig.speed, show_default=True, help="Every motion's rate, scaled.",
              type=Real(min=0, min_open=True, max=100, fix="give a factor, e.g. 2"))
@click.option("--plain/--varied-looks", default=synth.SynthConfig.plain, show_default=True,
              help="One look for every video, or colours and backgrounds drawn per video.")
@click.option("--fps", default=synth.SynthConfig.fps, show_default=True, help="Frame rate written in the files.",
              type=Real(min=0, min_open=True, max=1000, fix="give frames per second, e.g. 25"))
@click.option("--seed", default=synth.SynthConfig.seed, show_default=True, help="Same seed, same bytes.", type=SEED)
@click.option("--workers", default=0, type=WORKERS, help="Processes; 0 = one per core.")
def synth_command(out, workers, **knobs):
    """Write the built-in synthetic motion dataset.

    Its classes are told apart by motion alone.
    Real encoded videos with official-format split files, so `tgprep build --dataset synthetic
    --root OUT` reads them exactly as it reads HMDB-51.
    """
    done = synth.generate(out, synth.SynthConfig(**knobs), workers=workers)
    click.echo(synth.format_summary(done))


@main.command()
@click.option("--dataset", required=True, type=click.Choice(list(dataset_adapters.ADAPTERS)),
              help="Which adapter reads --root (see `tgprep datasets`).")
@click.option("--root", help="Folder holding the videos, nested in any way. "
              "synthetic: defaults to a cache folder, generated on first use.",
              type=Existing(exists=True, file_okay=False, fix="point --root at the folder holding the videos"))
@click.option("--out", required=True, type=OutFolder(buckets=True),
              help="Output for shards and manifests: a folder, or s3://bucket/prefix or gs://bucket/prefix "
              "(pip install 'tgprep[remote]'; written through --stage).")
@click.option("--stage", type=OutFolder(), help="With a bucket as --out: the local folder each shard is written in "
              "before its upload, and the build's lock [default: one per --out under ~/.cache/tgprep/stage].")
@storage_options(reads=False)
@click.option("--resume-check", default=BuildConfig.resume_check, type=click.Choice(["sha256", "size"]),
              show_default=True, help="How a rerun checks the shards an earlier run finished against their sidecars: "
              "size and sha256 (every byte read back, in parallel), or size alone for huge outputs you trust. A "
              "shard that fails is written again.")
@click.option("--annotations", default=None, help="Folder with the official split files [default: found under --root].",
              type=Existing(exists=True, file_okay=False, fix="point --annotations at the folder of split files"))
@click.option("--split", default=1, type=click.IntRange(1, 3), show_default=True, help="Official split.")
@click.option("--pool", default="all-non-test", type=click.Choice(["all-non-test", "official"]), show_default=True,
              help="HMDB-51 training pool: every non-test video (the paper's 5236) or the official 3570.")
@click.option("--ratio", help="Labeled fraction per class, 0 < R <= 1 (rounded, at least one).",
              type=Real(min=0, min_open=True, max=1, fix="give the labeled fraction, e.g. --ratio 0.4"))
@click.option("--labeled-list", callback=_labeled_list,
              type=Existing(exists=True, dir_okay=False, fix="give the list file of the labeled videos"),
              help="Exact labeled videos instead of --ratio (MMAction2 video/rawframe list or bare paths).")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seeds the labeled draw and the shard shuffle.")
@click.option("--val-fraction", default=0.3, show_default=True,
              type=Real(min=0, max=1, max_open=True, fix="give a share below 1, e.g. 0.3 (0: no val set)"),
              help="folder: share of each class held out as val.")
@click.option("--allow-missing", is_flag=True, help="Build without listed videos that are not on disk.")
@click.option("--fps", type=Real(min=0, min_open=True, fix="give frames per second to keep, e.g. --fps 10, or leave "
                                 "it out to keep every frame"),
              help="Keep this many frames per second [default: every frame]; "
              "TG still comes from the next frame of the original video.")
@click.option("--short-side", default=256, show_default=True,
              help="Resize the short side to this (never up); 0 keeps size.",
              type=Whole(min=0, fix="give the short side in pixels, e.g. 256, or 0 to keep the size"))
@click.option("--quality", default=BuildConfig.quality, show_default=True, help="JPEG quality of stored frames.",
              type=Whole(min=1, max=100, fix="give a JPEG quality from 1 to 100, e.g. 90"))
@click.option("--store", default=BuildConfig.store, type=click.Choice(["frames", "video"]), show_default=True,
              help="frames: every frame as RGB + TG JPEGs, the fastest to load (HMDB-51, UCF-101); video: the video "
              "re-encoded as H.264 with TG computed at load: a tenth of the bytes on Kinetics, for about twice the "
              "loader's CPU per clip (Kinetics). See BENCHMARKS.md.")
@click.option("--keyframe-interval", default=BuildConfig.keyframe_interval, show_default=True,
              help="--store video: a keyframe every this many frames; shorter costs bytes and loads hardly faster.",
              type=Whole(min=1, max=300, fix="give frames between keyframes, e.g. 32"))
@click.option("--videos-per-shard", default=BuildConfig.videos_per_shard, show_default=True,
              type=Whole(min=1, fix="give 1 or more videos per tar, e.g. 100"))
@click.option("--timeout", default=BuildConfig.timeout, show_default=True,
              help="Seconds one video may take to decode; a worker silent this long is killed and replaced.",
              type=Real(min=0, min_open=True, fix="give seconds, e.g. 300"))
@click.option("--workers", default=0, type=WORKERS, help="Parallel processes; 0 = one per core (local executor).")
@click.option("--executor", default="local", type=click.Choice(["local", "ray"]), show_default=True,
              help="local: this machine's cores; ray: a Ray cluster (pip install 'tgprep[ray]'; --out a bucket, "
              "which each task uploads its shard to, or a file system every node sees).")
@click.option("--ray-address", default=None, help="Ray cluster to join, e.g. auto or HOST:6379 "
              "[default: RAY_ADDRESS, else one on this machine, else a new local one].")
@click.option("--overwrite", is_flag=True, help="Replace what --out holds instead of resuming it.")
@click.option("--strict", is_flag=True, help="Exit 1 if any video failed.")
@click.option("--dry-run", is_flag=True, help="Stop after the manifests and the summary table.")
def build(storage, **options):
    """Write labeled / unlabeled / val shards of frames and TG.

    Decodes every video once, computes its temporal gradients and packs both into WebDataset tars.
    Run the same command again to resume after an interruption: finished shards are checked against their sidecars and kept.
    Videos that cannot be decoded are listed with their reason in OUT/failures.jsonl.
    """
    if options["ratio"] is not None and options["labeled_list"] is not None:
        raise click.UsageError("--ratio and --labeled-list both given: the list names the labeled videos exactly; "
                               "give only one of them")
    if options["root"] is None and options["dataset"] != "synthetic":
        raise click.UsageError(f"--dataset {options['dataset']} needs --root, the folder holding its videos")
    config = BuildConfig(**{**options, "out": str(options["out"]), "root": options["root"] or "",
                            "stage": options["stage"] and str(options["stage"])})
    if config.dataset == "synthetic" and not config.root:
        click.echo(f"synthetic: videos in {default_synthetic_root()} (made on first use, about half a minute)")
    report = run_build(config, command=["tgprep", *sys.argv[1:]], storage=storage)
    click.echo(summary(report, config.dry_run))
    if config.strict and report.failures:
        sys.exit(1)


@main.command()
@click.argument("path")
@storage_options()
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--key", "keys", multiple=True, help="Sample key to draw (repeatable); needs --png.")
@click.option("--random", "random_n", help="Draw N random samples; needs --png.",
              type=Whole(min=1, fix="give how many samples to draw, e.g. --random 2"))
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write a contact sheet: RGB frames above their TG.")
@click.option("--seed", default=0, type=SEED, help="For --random.")
def inspect(path, storage, as_json, keys, random_n, png, seed):
    """Summarise shards; draw samples with --png.

    PATH is a shard, a shard set (OUT/labeled) or an output root, a folder or a URL (s3://, gs://, http(s)://:
    its shards come through the node cache).
    """
    paths, _ = find_shards(path, storage)
    if png is not None:
        if not keys and not random_n:
            raise UserError("--png needs --key KEY or --random N: which samples to draw")
        sheet = inspection.contact_sheet(paths, keys=list(keys) or None, random_n=random_n, seed=seed)
        try:
            sheet.save(png)
        except OSError as e:
            raise UserError(f"{png}: cannot write the contact sheet ({e.strerror or e}); give another --png") from None
        click.echo(f"wrote {png}")
        return
    found = inspection.summarize(paths)
    click.echo(json.dumps(found, indent=1) if as_json else inspection.format_summary(found))


@main.command()
@click.argument("path")
@storage_options()
def verify(path, storage):
    """Re-read and check every shard; exit 1 on any problem.

    Checks the tar, its checksum and counts against the sidecar, and that every frame decodes. PATH as for
    inspect: a folder or a URL.
    """
    problems = verification.verify(path, storage)
    for line in problems:
        click.echo(line, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{path}: all shards verified")


if __name__ == "__main__":
    main(prog_name=os.path.basename(sys.argv[0]))
