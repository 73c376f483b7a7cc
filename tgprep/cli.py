"""The `tgprep` command line: parse, call one library function, print. No logic lives here."""

import json
import os
import sys
from pathlib import Path

import click

from tgprep import datasets as dataset_adapters
from tgprep import inspection, synth
from tgprep.build import build as run_build
from tgprep.build import default_synthetic_root, summary
from tgprep.config import BuildConfig
from tgprep.errors import OneLineErrors, UserError


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


@main.command()
def datasets():
    """List the dataset adapters and what each expects on disk."""
    for name, adapter in dataset_adapters.ADAPTERS.items():
        click.echo(click.style(name, bold=True))
        click.echo("".join(f"  {line}\n" for line in adapter.DESCRIPTION.strip().splitlines()))


@main.command(name="synth")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Folder to write (HMDB-51 layout).")
@click.option("--classes", default=synth.SynthConfig.classes, show_default=True, help="How many motion classes.")
@click.option("--videos-per-class", default=synth.SynthConfig.videos_per_class, show_default=True)
@click.option("--frames", default=synth.SynthConfig.frames, show_default=True, help="Frames per video.")
@click.option("--width", default=synth.SynthConfig.width, show_default=True)
@click.option("--height", default=synth.SynthConfig.height, show_default=True)
@click.option("--noise", default=synth.SynthConfig.noise, show_default=True, help="Pixel noise level.")
@click.option("--distractors", default=synth.SynthConfig.distractors, show_default=True,
              help="Moving objects whose motion says nothing about the class.")
@click.option("--speed", default=synth.SynthConfig.speed, show_default=True, help="Every motion's rate, scaled.")
@click.option("--plain/--varied-looks", default=synth.SynthConfig.plain, show_default=True,
              help="One look for every video, or colours and backgrounds drawn per video.")
@click.option("--fps", default=synth.SynthConfig.fps, show_default=True, help="Frame rate written in the files.")
@click.option("--seed", default=synth.SynthConfig.seed, show_default=True, help="Same seed, same bytes.")
@click.option("--workers", default=0, help="Processes; 0 = one per core.")
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
@click.option("--root", default="", help="Folder holding the videos, nested in any way. "
              "synthetic: defaults to a cache folder, generated on first use.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output folder for shards and manifests.")
@click.option("--annotations", default=None, help="Folder with the official split files [default: found under --root].")
@click.option("--split", default=1, type=click.IntRange(1, 3), show_default=True, help="Official split.")
@click.option("--pool", default="all-non-test", type=click.Choice(["all-non-test", "official"]), show_default=True,
              help="HMDB-51 training pool: every non-test video (the paper's 5236) or the official 3570.")
@click.option("--ratio", type=float, help="Labeled fraction per class, 0 < R <= 1 (rounded, at least one).")
@click.option("--labeled-list", type=click.Path(exists=True, dir_okay=False),
              help="Exact labeled videos instead of --ratio (MMAction2 video/rawframe list or bare paths).")
@click.option("--seed", default=0, show_default=True, help="Seeds the labeled draw and the shard shuffle.")
@click.option("--val-fraction", default=0.3, show_default=True, help="folder: share of each class held out as val.")
@click.option("--allow-missing", is_flag=True, help="Build without listed videos that are not on disk.")
@click.option("--fps", type=float, help="Keep this many frames per second [default: every frame]; "
              "TG still comes from the next frame of the original video.")
@click.option("--short-side", default=256, show_default=True, help="Resize the short side to this (never up); 0 keeps size.")
@click.option("--quality", default=BuildConfig.quality, show_default=True, help="JPEG quality of stored frames.")
@click.option("--videos-per-shard", default=BuildConfig.videos_per_shard, show_default=True)
@click.option("--timeout", default=BuildConfig.timeout, show_default=True, help="Seconds one video may take to decode.")
@click.option("--workers", default=0, help="Parallel processes; 0 = one per core.")
@click.option("--overwrite", is_flag=True, help="Replace what --out holds instead of resuming it.")
@click.option("--strict", is_flag=True, help="Exit 1 if any video failed.")
@click.option("--dry-run", is_flag=True, help="Stop after the manifests and the summary table.")
def build(**options):
    """Write labeled / unlabeled / val shards of frames and TG.

    Decodes every video once, computes its temporal gradients and packs both into WebDataset tars.
    Run the same command again to resume after an interruption: finished shards are kept.
    Videos that cannot be decoded are listed with their reason in OUT/failures.jsonl.
    """
    config = BuildConfig(**{**options, "out": str(options["out"])})
    if config.dataset == "synthetic" and not config.root:
        click.echo(f"synthetic: videos in {default_synthetic_root()} (made on first use, about half a minute)")
    report = run_build(config, command=["tgprep", *sys.argv[1:]])
    click.echo(summary(report, config.dry_run))
    if config.strict and report.failures:
        sys.exit(1)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--key", "keys", multiple=True, help="Sample key to draw (repeatable); needs --png.")
@click.option("--random", "random_n", type=int, help="Draw N random samples; needs --png.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write a contact sheet: RGB frames above their TG.")
@click.option("--seed", default=0, help="For --random.")
def inspect(path, as_json, keys, random_n, png, seed):
    """Summarise shards; draw samples with --png.

    PATH is a shard, a shard set (OUT/labeled) or an output root.
    """
    paths = inspection.shard_paths(path)
    if png is not None:
        if not keys and not random_n:
            raise UserError("--png needs --key KEY or --random N: which samples to draw")
        inspection.contact_sheet(paths, keys=list(keys) or None, random_n=random_n, seed=seed).save(png)
        click.echo(f"wrote {png}")
        return
    found = inspection.summarize(paths)
    click.echo(json.dumps(found, indent=1) if as_json else inspection.format_summary(found))


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def verify(path):
    """Re-read and check every shard; exit 1 on any problem.

    Checks the tar, its checksum and counts against the sidecar, and that every frame decodes.
    """
    problems = inspection.verify(path)
    for line in problems:
        click.echo(line, err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{path}: all shards verified")


if __name__ == "__main__":
    main(prog_name=os.path.basename(sys.argv[0]))
