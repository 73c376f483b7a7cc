"""The training loop: data, model, SGD with warm-up + cosine, DDP, checkpoints, metrics; readable in one sitting.

Run it on one process (`tgtrain run ...`) or many (`torchrun --nproc-per-node N -m tgtrain run ...`): torchrun's
environment switches DDP on. Every epoch starts from seeds derived from (seed, epoch, rank), the loaders are made once
for the run (tgtrain.loaders), and a checkpoint is written at the end of every epoch, so `--resume` continues exactly
where an uninterrupted run would be.
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

from tgprep.errors import UserError
from tgprep.storage.index import Storage
from tgtrain import data, execution, precise_bn, run_folder, waiting
from tgtrain.checkpoint import input_spec, load_checkpoint, save_checkpoint, trained_rgb
from tgtrain.config import PRESETS, TrainConfig
from tgtrain.evaluate import evaluate, format_report, write_predictions
from tgtrain.loaders import RunLoaders, precise_bn_stream
from tgtrain.methods import build_method
from tgtrain.plots import plot_confusion
from tgtrain.records import RunLog, StepStats, epoch_line
from tgtrain.shards import Data


LOG_EVERY = 20  # at most this many steps between step records: each read of the statistics waits for the device


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, storage: Storage = Storage()) -> dict:
    """A whole run into config.out, which it holds alone (tgtrain.run_folder): resumed from its last.pt, or
    replacing the run there (overwrite), or into a folder that holds no run. storage: how to reach remote data."""
    rank, world, device = setup_distributed(config.device)
    with run_folder.claimed(Path(config.out), resume, overwrite, rank, world):
        return _train(config, resume, storage, rank, world, device)


def _train(config: TrainConfig, resume: bool, storage: Storage, rank: int, world: int, device) -> dict:
    _, autocast = device_and_autocast(device.type)
    if device.type == "cpu":
        share_cpu(world)
    out, root = Path(config.out), config.data
    source = Data(root, storage)  # a folder, or a URL whose shards come through the node cache
    dataset = source.dataset
    classes = dataset["classes"]
    built_from = dataset.get("config", {}).get("dataset")
    if rank == 0 and built_from in PRESETS and config.preset not in (built_from, "tiny"):
        print(f"warning: {root} is a {built_from} build, trained with the {config.preset} preset's recipe; "
              f"--preset {built_from} gives {built_from}'s", file=sys.stderr)
    labeled_urls, pool_urls = source.shards("labeled"), pool_shards(source)
    val_urls = source.shards("val")

    torch.manual_seed(config.seed)  # the initial weights: the same for every rank, and for a run and its resumption
    method = build_method(config, len(classes)).to(device)
    source.check_cache(streams=2 + method.uses_unlabeled, workers=config.workers, shuffle=data.SHUFFLE)  # + val
    if world > 1 and device.type == "cuda" and config.sync_bn:  # BN over the global batch, as the reference
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    execution.prepare(networks(method), config.compile, config.channels_last)
    model = method
    if world > 1:  # buffers are not broadcast (the reference's setting): BN statistics are averaged per epoch instead
        model = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None,
                                        broadcast_buffers=False)
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

    start = state["epoch"]
    loaders = RunLoaders(config, method, labeled_urls, pool_urls, val_urls, steps, start, len(classes),
                         precise_bn_done=sum(precise_bn_due(config, e) for e in range(start)))
    started, warned = time.perf_counter(), False
    for epoch in range(start, config.epochs):
        seed = config.seed * 100_003 + epoch * 1_009 + rank
        torch.manual_seed(seed)  # dropout and anything else on the global generator
        generator = torch.Generator().manual_seed(seed)  # augmentation parameters
        use_unlabeled = method.uses_unlabeled and epoch >= config.supervised_epochs
        batches = waiting.Timed(loaders.epoch())
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
        if note and rank == 0 and not warned and epoch > start:  # the first epoch's wait holds the workers' start-up
            print(note, file=sys.stderr)
            warned = True
        if epoch == start and rank == 0 and (compiled := execution.compile_note(config.compile)):
            print(compiled, file=sys.stderr)
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "lr": lr, **sums.means(),
                  "clips_per_s": clips_per_step * steps / seconds, "data_wait": batches.waited / seconds}
        precise_bn.average_across_ranks(method)
        state["precise_bn"] = precise_bn_due(config, epoch)  # recorded in the checkpoint
        if state["precise_bn"]:
            started_bn = time.perf_counter()
            precise_bn.recompute(networks(method), loaders.precise_bn(), config.precise_bn_batches, config.size,
                                 device, autocast)
            record["precise_bn_s"] = time.perf_counter() - started_bn
        if validating(config, epoch):
            for modality, net in networks(method).items():  # TG: the teacher's accuracy; inference never uses it
                found = validate(net, modality, loaders, config, device, autocast)
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
    if dist.is_initialized():  # torchrun, even with one process: every rank done with every collective first
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


def validating(config: TrainConfig, epoch: int) -> bool:
    """Whether the run validates after epoch `epoch` (0-based): every eval_every epochs, and after the last."""
    return (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs


def precise_bn_due(config: TrainConfig, epoch: int) -> bool:
    """Whether PreciseBN runs after epoch `epoch`: before every validation, and every precise_bn_every epochs."""
    return config.precise_bn_batches > 0 and (validating(config, epoch) or (epoch + 1) % config.precise_bn_every == 0)


def pool_shards(source: Data) -> list:
    """The whole training pool: labeled and unlabeled shards (the paper's unlabeled stream)."""
    unlabeled = source.shards("unlabeled") if source.dataset["videos"]["unlabeled"] else []
    return source.shards("labeled") + unlabeled


def networks(method) -> dict:
    """modality -> the method's network for it (rgb, and tg for LTG)."""
    return {modality: getattr(method, modality) for modality in method.modalities}


def recompute_bn(nets: dict, config, pool_urls, classes: int, device, autocast, workers: int) -> None:
    """PreciseBN of the networks once, with a loader of its own (a checkpoint's, before `tgtrain eval`)."""
    batches = data.loader(precise_bn_stream(config, pool_urls, tuple(nets), classes), workers)
    precise_bn.recompute(nets, batches, config.precise_bn_batches, config.size, device, autocast)


def validate(net, modality: str, loaders: RunLoaders, config, device, autocast) -> dict:
    """Top-1, top-5 and mean class accuracy (%) of one network on one centre clip per val video, centre-cropped
    at the training size (the reference's val pipeline), over all ranks. Eager even when compiled: a few batches of
    other shapes, in eval mode, would each cost a compilation."""
    with torch.compiler.set_stance("force_eager"):
        return evaluate(net, loaders.val(modality), device, autocast, crop=config.size, modality=modality)


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
    if "RANK" not in os.environ:
        return 0, 1, device
    if device.type == "cuda":  # the device first, then a group bound to it: NCCL never guesses a rank's GPU
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), device


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



def device_and_autocast(choice: str):
    """The device a single process uses, and bf16 autocast on CUDA (a no-op context on the CPU). On CUDA cuDNN
    may also time its convolution algorithms once per shape and keep the fastest (the shapes never change)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu or auto")
    device = torch.device("cuda" if torch.cuda.is_available() and choice != "cpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device, torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def trained_rgb_net(ckpt: Path, data_root: str, storage: Storage, device, autocast, workers: int):
    """The RGB network of a checkpoint (inference is RGB-only), its config, and the classes; checked against the
    data. Its BN statistics are recomputed on the data's training pool if the run did not do so before saving."""
    net, config, checkpoint = trained_rgb(ckpt)
    classes, source = checkpoint["classes"], Data(data_root, storage)
    source.check_cache(streams=1, workers=workers, shuffle=data.SHUFFLE)  # PreciseBN's stream, then the test's
    if source.dataset["classes"] != classes:
        raise UserError(f"{ckpt}: trained on {len(classes)} classes that differ from those of {source.location}; "
                        "evaluate on the dataset it was trained on")
    net.to(device)
    if config.precise_bn_batches and not checkpoint.get("precise_bn"):
        recompute_bn({"rgb": net}, config, pool_shards(source), len(classes), device, autocast, workers)
    return net, config, classes, source


def test_stream(config: TrainConfig, source: Data, clips, crops, batch_size, workers, classes: int):
    stream = data.eval_stream(source.shards("val"), batch_size=batch_size, clip_len=config.clip_len,
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


def evaluate_checkpoint(ckpt, data, clips, crops, batch_size, workers, device, png=None,
                        storage: Storage = Storage()) -> str:
    """`tgtrain eval`: clips x crops views per video (squares along the long side, as test_views says), RGB only,
    as a printable report; png: also draw the confusion matrix there."""
    device, autocast = device_and_autocast(device)
    net, config, classes, source = trained_rgb_net(ckpt, data, storage, device, autocast, workers)
    check_batch(config, clips, crops, batch_size)
    stream = test_stream(config, source, clips, crops, batch_size, workers, len(classes))
    found = evaluate(net, stream, device, autocast, crop=test_crop(config))
    if png:
        with run_folder.writing(Path(png).parent, then="run it again"):
            plot_confusion(found["confusion"], classes, png, title=f"{Path(*Path(ckpt).parts[-2:])}: top-1 "
                           f"{found['top1']:.1f} %, mean class accuracy {found['mean_class']:.1f} %\n"
                           f"{found['videos']} val videos, {clips or config.test_clips} clips x "
                           f"{crops or config.test_crops} crops each")
    return format_report(found, classes)


def predict_checkpoint(ckpt, data, out, clips, crops, batch_size, workers, device, storage: Storage = Storage()) -> int:
    """`tgtrain predict`: per-video scores and pooled features to HDF5; returns the number of videos."""
    device, autocast = device_and_autocast(device)
    net, config, classes, source = trained_rgb_net(ckpt, data, storage, device, autocast, workers)
    check_batch(config, clips, crops, batch_size)
    stream = test_stream(config, source, clips, crops, batch_size, workers, len(classes))
    return write_predictions(net, stream, device, autocast, out, classes, crop=test_crop(config))
