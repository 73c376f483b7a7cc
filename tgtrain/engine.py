"""The training loop: data, model, SGD with warm-up + cosine, DDP, checkpoints, metrics; readable in one sitting.

Run it on one process (`tgtrain run ...`) or many (`torchrun --nproc-per-node N -m tgtrain run ...`): torchrun's
environment switches DDP on. Every epoch starts from seeds derived from (seed, epoch, rank), and a checkpoint is
written at the end of every epoch, so `--resume` continues exactly where an uninterrupted run would be.
"""

import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tgprep import schema
from tgprep.errors import UserError
from tgtrain import data, precise_bn, run_folder, waiting
from tgtrain.checkpoint import input_spec, load_checkpoint, save_checkpoint, trained_rgb
from tgtrain.config import PRESETS, TrainConfig
from tgtrain.evaluate import evaluate, format_report, write_predictions
from tgtrain.methods import build_method
from tgtrain.plots import plot_confusion
from tgtrain.records import RunLog, StepStats, epoch_line


LOG_EVERY = 20  # at most this many steps between step records: each read of the statistics waits for the device


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """A whole run into config.out, which it holds alone (tgtrain.run_folder): resumed from its last.pt, or
    replacing the run there (overwrite), or into a folder that holds no run."""
    rank, world, device = setup_distributed(config.device)
    with run_folder.claimed(Path(config.out), resume, overwrite, rank, world):
        return _train(config, resume, rank, world, device)


def _train(config: TrainConfig, resume: bool, rank: int, world: int, device) -> dict:
    _, autocast = device_and_autocast(device.type)
    if device.type == "cpu":
        share_cpu(world)
    out, root = Path(config.out), Path(config.data)
    dataset = read_dataset(root)
    classes = dataset["classes"]
    built_from = dataset.get("config", {}).get("dataset")
    if rank == 0 and built_from in PRESETS and config.preset not in (built_from, "tiny"):
        print(f"warning: {root} is a {built_from} build, trained with the {config.preset} preset's recipe; "
              f"--preset {built_from} gives {built_from}'s", file=sys.stderr)
    labeled_urls, pool_urls = data.shard_urls(root, "labeled"), pool_shards(root, dataset)
    val_urls = data.shard_urls(root, "val")

    torch.manual_seed(config.seed)  # the initial weights: the same for every rank, and for a run and its resumption
    method = build_method(config, len(classes)).to(device)
    if world > 1 and device.type == "cuda" and config.sync_bn:  # BN over the global batch, as the reference
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    model = DistributedDataParallel(method) if world > 1 else method
    optimizer = torch.optim.SGD(method.parameters(), lr=0.0, momentum=config.momentum, weight_decay=config.weight_decay)
    state = {"epoch": 0, "best": -1.0, "best_epoch": -1}
    if resume:
        state = load_checkpoint(out / "last.pt", method, optimizer)
    log = RunLog(out, config, state, len(classes), rank)  # metrics.jsonl and TensorBoard, cut back to state's epoch
    state["input"] = input_spec(dataset)  # for predict --video and export, which have no shards

    counts = dataset["videos"]
    stream_videos = counts["labeled"] + counts["unlabeled"] if method.uses_unlabeled else counts["labeled"]
    steps = max(1, math.ceil(stream_videos / (config.batch_size * world)))  # per epoch, the same on every rank
    clips_per_step = config.batch_size * world * (2 if method.uses_unlabeled else 1)
    peak_lr = config.lr * clips_per_step / config.lr_clips  # the reference's 0.2 is for 8 GPUs' clips per step
    every = max(1, min(LOG_EVERY, steps // 10))  # so that a step record or ten draw each epoch's curves

    started, warned = time.perf_counter(), False
    for epoch in range(state["epoch"], config.epochs):
        seed = config.seed * 100_003 + epoch * 1_009 + rank
        torch.manual_seed(seed)  # dropout and anything else on the global generator
        generator = torch.Generator().manual_seed(seed)  # augmentation parameters
        use_unlabeled = method.uses_unlabeled and epoch >= config.supervised_epochs
        batches = waiting.Timed(epoch_batches(config, method, labeled_urls, pool_urls, steps, epoch, len(classes)))
        model.train()
        bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=rank != 0 or None,
                   unit="step", dynamic_ncols=True)
        sums, tick = StepStats(), time.perf_counter()
        for step, (labeled, unlabeled) in enumerate(bar):
            lr = learning_rate(epoch, step, steps, config, peak_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            labeled, unlabeled = to_device(labeled, device), to_device(unlabeled, device)
            sums.add(train_step(model, optimizer, labeled, unlabeled, use_unlabeled, generator, autocast,
                                config.clip_grad))
            if (step + 1) % every == 0 or step + 1 == steps:
                means = sums.window(clips_per_step)  # and clips_per_s, since the last window
                log.step({"step": epoch * steps + step + 1, "at_epoch": epoch + (step + 1) / steps, "lr": lr, **means})
                bar.set_postfix_str(f"loss {means['loss']:.3f} lr {lr:.4f} {means['clips_per_s']:.1f} clips/s")
        bar.close()
        seconds = time.perf_counter() - tick
        note = waiting.starved(batches.waited, seconds, config.workers)
        if note and rank == 0 and not warned:
            print(note, file=sys.stderr)
            warned = True
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "lr": lr, **sums.means(),
                  "clips_per_s": clips_per_step * steps / seconds, "data_wait": batches.waited / seconds}
        precise_bn.average_across_ranks(method)
        validating = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        due = validating or (epoch + 1) % config.precise_bn_every == 0
        state["precise_bn"] = config.precise_bn_batches > 0 and due  # recorded in the checkpoint
        if state["precise_bn"]:
            started_bn = time.perf_counter()
            recompute_bn(networks(method), config, pool_urls, len(classes), device, autocast, epoch)
            record["precise_bn_s"] = time.perf_counter() - started_bn
        if validating:
            for modality, net in networks(method).items():  # TG: the teacher's accuracy; inference never uses it
                found = validate(net, modality, val_urls, config, device, autocast, len(classes))
                suffix = "" if modality == "rgb" else f"_{modality}"
                record.update({f"val_{key}{suffix}": found[key] for key in ("top1", "top5", "mean_class")})
            if record["val_top1"] > state["best"]:
                state.update(best=record["val_top1"], best_epoch=epoch + 1)
        state["epoch"] = epoch + 1
        record["seconds"] = time.perf_counter() - tick
        state["records"] = log.epoch(record)  # the checkpoint carries its epoch's records
        if rank == 0:
            tqdm.write(epoch_line(record, config.epochs), file=sys.stderr)  # progress, beside the bar
            save_checkpoint(out, method, optimizer, config, classes, state, best=state["best_epoch"] == epoch + 1)
        log.commit()  # metrics.jsonl and curves.png, once the checkpoint is safe
    log.close()
    summary = {"rank": rank, "method": config.method, "best_top1": state["best"], "best_epoch": state["best_epoch"],
               "chance": 1 / len(classes), "epochs": config.epochs, "minutes": (time.perf_counter() - started) / 60,
               "out": str(out)}
    if world > 1:  # every rank done with every collective before any tears its group down
        dist.barrier()
        dist.destroy_process_group()
    return summary


def train_step(model, optimizer, labeled, unlabeled, use_unlabeled, generator, autocast, clip_grad) -> dict:
    """One optimisation step; returns the step's statistics as device tensors, read nowhere here: a read (float,
    .item()) would make the host wait for the device at every step."""
    with autocast:
        loss, stats = model(labeled, unlabeled, use_unlabeled, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], clip_grad)
    optimizer.step()
    return {"loss": loss.detach(), **stats}


def epoch_batches(config, method, labeled_urls, pool_urls, steps, epoch, classes):
    """One epoch of (labeled, unlabeled) batch pairs; unlabeled is None for the supervised method.
    The streams' draws depend on (seed, rank, worker, epoch) only, so a resumed run draws the same clips."""
    common = dict(batch_size=config.batch_size, clip_len=config.clip_len, interval=config.frame_interval,
                  size=config.size, area=(config.crop_area, 1.0), modalities=method.modalities, epoch_batches=steps, epoch=epoch,
                  classes=classes)
    labeled = data.loader(data.train_stream(labeled_urls, labeled=True, seed=2 * config.seed, **common), config.workers)
    if not method.uses_unlabeled:
        return ((batch, None) for batch in labeled)
    unlabeled = data.loader(data.train_stream(pool_urls, labeled=False, seed=2 * config.seed + 1, **common),
                            config.workers)
    return zip(labeled, unlabeled)


def pool_shards(root: Path, dataset: dict) -> list[str]:
    """The whole training pool: labeled and unlabeled shards (the paper's unlabeled stream)."""
    unlabeled = data.shard_urls(root, "unlabeled") if dataset["videos"]["unlabeled"] else []
    return data.shard_urls(root, "labeled") + unlabeled


def networks(method) -> dict:
    """modality -> the method's network for it (rgb, and tg for LTG)."""
    return {modality: getattr(method, modality) for modality in method.modalities}


def recompute_bn(nets: dict, config, pool_urls, classes: int, device, autocast, epoch: int = 0,
                 workers: int | None = None) -> None:
    """PreciseBN of the networks on precise_bn_batches batches of training-pool clips per rank (a resampled
    stream: the same count on every rank, other clips at each epoch)."""
    # area 1: no box of the whole frame's area fits a drawn aspect ratio, so every clip gets the fallback, the
    # centred square: with the centre crop below, the reference's val view (the flip does not change BN's statistics)
    stream = data.train_stream(pool_urls, batch_size=config.batch_size, clip_len=config.clip_len,
                               interval=config.frame_interval, size=config.load_size, area=(1.0, 1.0),
                               modalities=tuple(nets),
                               labeled=False, epoch_batches=config.precise_bn_batches, seed=2 * config.seed + 2,
                               epoch=epoch, classes=classes)
    batches = data.loader(stream, config.workers if workers is None else workers)
    precise_bn.recompute(nets, batches, config.precise_bn_batches, config.size, device, autocast)


def validate(net, modality: str, val_urls, config, device, autocast, classes: int) -> dict:
    """Top-1, top-5 and mean class accuracy (%) of one network on one centre clip per val video, centre-cropped
    at the training size (the reference's val pipeline), over all ranks."""
    stream = data.eval_stream(val_urls, batch_size=config.batch_size * 2, clip_len=config.clip_len,
                              interval=config.frame_interval, size=config.load_size, clips=1, crops=1,
                              modality=modality, classes=classes)
    return evaluate(net, data.loader(stream, config.workers), device, autocast, crop=config.size, modality=modality)


def learning_rate(epoch: int, step: int, steps_per_epoch: int, config: TrainConfig, peak: float) -> float:
    """The reference's schedule (MMAction2's CosineAnnealing by epoch, linear warm-up by step): a cosine from peak at
    epoch 0 to 0 over all epochs, stepped once per epoch, times a factor rising linearly from warmup_start to 1 over
    the first warmup_epochs."""
    lr = peak * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    done, warmup = epoch * steps_per_epoch + step, config.warmup_epochs * steps_per_epoch
    if done < warmup:
        lr *= config.warmup_start + (1 - config.warmup_start) * done / warmup
    return lr


def setup_distributed(choice: str):
    """(rank, world size, device). torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them, one process."""
    device, _ = device_and_autocast(choice)
    cuda = device.type == "cuda"
    if "RANK" not in os.environ:
        return 0, 1, device
    dist.init_process_group("nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local}" if cuda else "cpu")


def share_cpu(processes: int) -> None:
    """Give each training process its share of the cores (torch would take them all in every rank). Measured
    on two cores with the tiny preset: two threads trained 1.2x faster than one beside the light loader workers,
    but 8x slower when other programs kept the cores busy (threads spin, waiting for each other): set
    OMP_NUM_THREADS=1 on a shared machine; it is left alone when set."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))


def to_device(batch, device):
    if batch is None:
        return None
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def read_dataset(root: Path) -> dict:
    try:
        return schema.read_dataset(root / "dataset.json")
    except FileNotFoundError:
        raise UserError(f"{root}: no dataset.json here; point --data at a `tgprep build` output folder") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{root / 'dataset.json'}: {e}; rebuild with tgprep build") from None




def device_and_autocast(choice: str):
    """The device a single process uses, and bf16 autocast on CUDA (a no-op context on the CPU). On CUDA cuDNN
    may also time its convolution algorithms once per shape and keep the fastest (the shapes never change)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    device = torch.device("cuda" if torch.cuda.is_available() and choice != "cpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device, torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def trained_rgb_net(ckpt: Path, data_root: Path, device, autocast, workers: int):
    """The RGB network of a checkpoint (inference is RGB-only), its config, and the classes; checked against the
    data. Its BN statistics are recomputed on the data's training pool if the run did not do so before saving."""
    net, config, checkpoint = trained_rgb(ckpt)
    classes, dataset = checkpoint["classes"], read_dataset(data_root)
    if dataset["classes"] != classes:
        raise UserError(f"{ckpt}: trained on {len(classes)} classes that differ from those of {data_root}; "
                        "evaluate on the dataset it was trained on")
    net.to(device)
    if config.precise_bn_batches and not checkpoint.get("precise_bn"):
        recompute_bn({"rgb": net}, config, pool_shards(data_root, dataset), len(classes), device, autocast,
                     workers=workers)
    return net, config, classes


def test_stream(config: TrainConfig, data_root: Path, clips, crops, batch_size, workers, classes: int):
    stream = data.eval_stream(data.shard_urls(data_root, "val"), batch_size=batch_size, clip_len=config.clip_len,
                              interval=config.frame_interval, size=config.load_size,
                              clips=clips or config.test_clips, crops=int(crops or config.test_crops), classes=classes)
    return data.loader(stream, workers)


def test_crop(config: TrainConfig) -> int | None:
    """"full": the network sees the whole load_size squares (the paper's test views, a larger scale than it
    trained at; fully convolutional, it pools over any size); "center": their centre crop at the training size."""
    return config.size if config.test_views == "center" else None


MAX_BATCH_BYTES = 4 << 30  # uint8 views of one evaluation batch; the defaults of a dataset preset take 0.2 GB


def check_batch(config: TrainConfig, clips, crops, batch_size: int) -> None:
    """A batch of test views that would not fit in memory is one line, before anything is decoded."""
    views = batch_size * (clips or config.test_clips) * int(crops or config.test_crops)
    size = views * config.clip_len * config.load_size ** 2 * 3
    if size > MAX_BATCH_BYTES:
        raise UserError(f"--batch-size {batch_size} x {views // batch_size} views of {config.clip_len} frames at "
                        f"{config.load_size} px: {size / 1e9:.1f} GB per batch, over {MAX_BATCH_BYTES / 1e9:.1f} GB; "
                        "lower --batch-size or --clips")


def evaluate_checkpoint(ckpt, data, clips, crops, batch_size, workers, device, png=None) -> str:
    """`tgtrain eval`: clips x crops views per video (squares along the long side, as test_views says), RGB only,
    as a printable report; png: also draw the confusion matrix there."""
    device, autocast = device_and_autocast(device)
    net, config, classes = trained_rgb_net(ckpt, data, device, autocast, workers)
    check_batch(config, clips, crops, batch_size)
    stream = test_stream(config, data, clips, crops, batch_size, workers, len(classes))
    found = evaluate(net, stream, device, autocast, crop=test_crop(config))
    if png:
        with run_folder.writing(Path(png).parent, then="run it again"):
            plot_confusion(found["confusion"], classes, png, title=f"{Path(*Path(ckpt).parts[-2:])}: top-1 "
                           f"{found['top1']:.1f} %, mean class accuracy {found['mean_class']:.1f} %\n"
                           f"{found['videos']} val videos, {clips or config.test_clips} clips x "
                           f"{crops or config.test_crops} crops each")
    return format_report(found, classes)


def predict_checkpoint(ckpt, data, out, clips, crops, batch_size, workers, device) -> int:
    """`tgtrain predict`: per-video scores and pooled features to HDF5; returns the number of videos."""
    device, autocast = device_and_autocast(device)
    net, config, classes = trained_rgb_net(ckpt, data, device, autocast, workers)
    check_batch(config, clips, crops, batch_size)
    stream = test_stream(config, data, clips, crops, batch_size, workers, len(classes))
    return write_predictions(net, stream, device, autocast, out, classes, crop=test_crop(config))
