"""The `tgtrain` command line: run (train), config, eval, predict and export. Parse, call one library function,
print."""

import os
import sys
from pathlib import Path

import click

from tgprep.errors import OneLineErrors, UserError
from tgprep.sample import SampleError
from tgprep.storage.options import storage_options
from tgtrain import engine
from tgtrain.config import ALIASES, DEVICES, METHODS, PRESETS, RANGES, resolve_config, to_toml


RESUME = "`tgtrain run ... --resume` continues from the last finished epoch"


class Cli(OneLineErrors):
    interrupted = f"interrupted: {RESUME}"

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SampleError as e:  # a damaged sample met while reading shards: bad input, not a bug
            click.echo(f"error: {sample_problem(e)}", err=True)
            sys.exit(2)
        except RuntimeError as e:  # torch's words when a loader worker dies or hangs (data.loader's timeout)
            if not str(e).startswith(("DataLoader worker", "DataLoader timed out")):
                raise
            click.echo(f"error: {str(e).strip().rstrip('.')}. A killed worker is often the kernel's out-of-memory "
                       f"killer, a hung one a stalled file system: try fewer --workers; {RESUME}", err=True)
            sys.exit(1)


def sample_problem(error: SampleError) -> str:
    """The error's one line. From a DataLoader worker it arrives as the worker's traceback, whose last line is
    "tgprep.sample.SampleError: <the line>"."""
    message = str(error).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[1]
    return message


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="tgprep")
def main():
    """Train action recognition from few labels with temporal gradients (and baselines) on tgprep shards.

    \b
    tgtrain run --data shards/hmdb51-40 --preset hmdb51 --out runs/ltg  # train (torchrun for DDP)
    tgtrain run --data shards/synthetic --preset tiny --epochs 2        # a short try: the schedule scales
    tensorboard --logdir runs                                           # watch the runs
    tgtrain config --preset ucf101                                      # the settings a run would use
    tgtrain eval --ckpt runs/ltg/best.pt --data shards/hmdb51-40 --png confusion.png  # RGB only
    tgtrain predict --ckpt runs/ltg/best.pt --video a.mp4 b.avi         # top-5 classes per file
    tgtrain predict --ckpt runs/ltg/best.pt --data shards/hmdb51-40 --out preds.h5
    tgtrain export --ckpt runs/ltg/best.pt --out model.pt2              # for torch.export.load, no tgtrain
    """


PRESET_HELP = ("The recipe to start from: hmdb51, ucf101, kinetics400 (the paper's R3D-18 settings for each; r3d18 is "
               "hmdb51's earlier name) or tiny (a small network that trains on a CPU in minutes). "
               "`tgtrain config --preset P` prints one whole. [default: the --config file's, else hmdb51]")


def recipe_options(command):
    """--preset, --config and --set: the same for `run` and `config`."""
    for option in reversed([
        click.option("--preset", type=click.Choice([*PRESETS, *ALIASES]), help=PRESET_HELP),
        click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
                     help="TOML file of TrainConfig fields (a run's config.toml works), applied over the preset."),
        click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
                     help="Any TrainConfig field, over the file; repeat it: --set epochs=180 --set blocks=1,1,1,1."),
    ]):
        command = option(command)
    return command


@main.command()
@click.option("--data", help="A `tgprep build` output: a folder, or an s3://, gs:// or http(s):// URL [default: the "
              "--config file's data].")
@storage_options()
@click.option("--out", help="Run folder [default: runs/latest].")
@click.option("--method", type=click.Choice(METHODS), help="ltg (the paper), fixmatch or supervised [default: ltg].")
@recipe_options
@click.option("--epochs", type=int, help="Total epochs; the warm-up and supervised epochs not set otherwise scale "
              "with it, in the preset's proportions (a note says the values).")
@click.option("--batch-size", type=int, help="Labeled clips per step per process (the unlabeled batch is as large).")
@click.option("--lr", type=float, help="Learning rate for lr_clips clips per step, scaled to the real batch.")
@click.option("--workers", type=int, help="Data-loading processes per training process.")
@click.option("--device", type=click.Choice(DEVICES))
@click.option("--seed", type=int)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@click.option("--overwrite", is_flag=True, help="Replace the run in --out (a run folder is refused otherwise).")
def run(preset, config_file, settings, resume, overwrite, storage, **flags):
    """Train; under `torchrun --nproc-per-node N -m tgtrain run ...` with DDP.

    Settings: defaults <- --preset <- --config <- --set <- the flags below. Writes config.toml, metrics.jsonl,
    TensorBoard events (`tensorboard --logdir` on --out or its parent), curves.png, last.pt and best.pt into --out,
    which it holds alone while it runs.
    """
    config = resolved(preset, config_file, settings, **flags)
    if not config.data:
        raise UserError("give --data: the output of `tgprep build` (or data = ... in the --config file)")
    done = engine.train(config, resume=resume, overwrite=overwrite, storage=storage)
    if done["rank"] == 0:
        click.echo(f"{done['method']}: best val top-1 {done['best_top1']:.1f} % at epoch {done['best_epoch']} "
                   f"(chance {100 * done['chance']:.1f} %), {done['epochs']} epochs in {done['minutes']:.1f} min; "
                   f"run folder {done['out']}")


@main.command(name="config")
@recipe_options
def config_command(preset, config_file, settings):
    """Print the resolved settings as TOML, ready for `tgtrain run --config FILE`.

    \b
    tgtrain config --preset ucf101 > ucf101.toml
    tgtrain config --preset ucf101 --set epochs=100 --set warmup_epochs=20
    """
    click.echo(to_toml(resolved(preset, config_file, settings)), nl=False)


def resolved(preset, config_file, settings, **flags):
    """The config; the note on a schedule scaled to the epochs given goes to stderr, beside the output."""
    config, note = resolve_config(preset, config_file, settings, **flags)
    if note and os.environ.get("RANK", "0") == "0":  # once under torchrun
        click.echo(f"note: {note}", err=True)
    return config


CKPT = click.option("--ckpt", required=True, type=click.Path(path_type=Path), help="A tgtrain checkpoint (best.pt).")


def view_options(command):
    """How a video is viewed and the work batched: the same for eval and predict."""
    for option in reversed([
        click.option("--clips", type=click.IntRange(*RANGES["test_clips"]),
                     help="Uniform clips per video [default: the run's test_clips, 10]."),
        click.option("--crops", type=click.Choice(["1", "3"]),
                     help="Squares per clip along the long side [default: the run's test_crops, 3]."),
        click.option("--batch-size", default=4, show_default=True, type=click.IntRange(*RANGES["batch_size"]),
                     help="Videos per batch (shards)."),
        click.option("--workers", default=2, show_default=True, type=click.IntRange(*RANGES["workers"]),
                     help="Data-loading processes (shards)."),
        click.option("--device", default="auto", type=click.Choice(DEVICES), show_default=True),
    ]):
        command = option(command)
    return command


DATA = "A `tgprep build` output: a folder, or an s3://, gs:// or http(s):// URL."


@main.command(name="eval")
@CKPT
@click.option("--data", required=True, help=DATA)
@storage_options()
@view_options
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw the confusion matrix (rows normalised, classes named) into this PNG file.")
def eval_command(**options):
    """RGB-only accuracy on the val shards: top-1, top-5, mean class accuracy and a per-class table.

    Views as the run's test_views (full loaded squares, or their centre crops at the training size); a checkpoint
    saved without PreciseBN gets it first, on the data's training pool.
    """
    click.echo(engine.evaluate_checkpoint(**options))


@main.command()
@CKPT
@click.option("--data", help=DATA)
@storage_options()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="HDF5 file to write (with --data).")
@click.option("--video", "video_files", is_flag=True,
              help="Classify the video files given as arguments instead: top-5 classes per file.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --video: also write the results to this JSON file.")
@view_options
@click.argument("videos", nargs=-1, type=click.Path(path_type=Path))
def predict(data, out, video_files, json_file, videos, storage, **options):
    """Per-video scores and pooled features of the val shards to HDF5 (--data, --out), or the top-5 classes of
    video files (--video FILE ...).

    \b
    tgtrain predict --ckpt runs/ltg/best.pt --data shards/hmdb51-40 --out preds.h5
    tgtrain predict --ckpt runs/ltg/best.pt --video a.mp4 b.avi --json top5.json

    Files are decoded as the training data was built (its short side and frame rate, which the checkpoint
    records) and viewed as `tgtrain eval` views the val videos; no shards are needed.
    """
    if video_files:
        if not videos or data or out:
            raise UserError("--video classifies the video files given after it, without --data or --out: "
                            "tgtrain predict --ckpt best.pt --video a.mp4 b.avi")
        from tgtrain.classify import classify, format_result, write_json

        results = []
        for result in classify(options["ckpt"], list(videos), options["clips"], options["crops"], options["device"]):
            click.echo(format_result(result))
            results.append(result)
        if json_file:
            write_json(json_file, options["ckpt"], results)
        return
    if videos or json_file or not (data and out):
        raise UserError("give --data and --out to score the val shards, or --video FILE ... to classify files")
    count = engine.predict_checkpoint(data=data, out=out, storage=storage, **options)
    click.echo(f"wrote {count} videos to {out}")


@main.command(name="export")
@CKPT
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The file to write, e.g. model.pt2.")
def export_command(ckpt, out):
    """The RGB network as a torch.export program, loadable by torch.export.load without tgtrain: uint8 clips in,
    logits out, the normalisation inside, the class names and how to call it stored with it."""
    from tgtrain.export import export

    text = export(ckpt, out)
    click.echo(f"wrote {out}\n\n{text}", nl=False)
