"""The training loop: data, model, SGD with warm-up + cosine, DDP, checkpoints, metrics; readable in one sitting.

Run it on one process (`tgtrain run ...`) or many (`torchrun --nproc-per-node N -m tgtrain run ...`): torchrun's
environment switches DDP on. Every epoch starts from seeds derived from (seed, epoch, rank), the loaders are made once
for the run (tgtrain.loaders), and a checkpoint is written at the end of every epoch, so `--resume` continues exactly
where an uninterrupted run would be.
"""

import json
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
from tgtrain import data, execution, precise_bn, waiting
from tgtrain.checkpoint import checkpoint_config, load_checkpoint, load_weights, read_checkpoint, save_checkpoint
from tgtrain.config import PRESETS, TrainConfig, to_toml
from tgtrain.curves import plot_curves
from tgtrain.evaluate import evaluate, format_report, write_predictions
from tgtrain.loaders import RunLoaders, precise_bn_stream
from tgtrain.methods import build_method
from tgtrain.shards import Data


LOG_EVERY = 20  # steps between reads of the step statistics: each read waits for the device to catch up


def train(config: TrainConfig, resume: bool = False, storage: Storage = Storage()) -> dict:
    rank, world, device = setup_distributed(config.device)
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
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(to_toml(config))
        if not resume:  # a fresh run starts a fresh log
            (out / "metrics.jsonl").unlink(missing_ok=True)

    counts = dataset["videos"]
    stream_videos = counts["labeled"] + counts["unlabeled"] if method.uses_unlabeled else counts["labeled"]
    steps = max(1, math.ceil(stream_videos / (config.batch_size * world)))  # per epoch, the same on every rank
    clips_per_step = config.batch_size * world * (2 if method.uses_unlabeled else 1)
    peak_lr = config.lr * clips_per_step / config.lr_clips  # the reference's 0.2 is for 8 GPUs' clips per step

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
            if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                bar.set_postfix_str(f"loss {sums.latest('loss'):.3f} lr {lr:.4f} "
                                    f"{clips_per_step * (step + 1) / (time.perf_counter() - tick):.1f} clips/s")
        bar.close()
        note = waiting.starved(batches.waited, time.perf_counter() - tick, config.workers)
        if note and rank == 0 and not warned:
            print(note, file=sys.stderr)
            warned = True
        if epoch == start and rank == 0 and (compiled := execution.compile_note(config.compile)):
            print(compiled, file=sys.stderr)
        record = {"epoch": epoch + 1, "lr": lr, **sums.means(),
                  "clips_per_s": clips_per_step * steps / (time.perf_counter() - tick)}
        precise_bn.average_across_ranks(method)
        state["precise_bn"] = precise_bn_due(config, epoch)  # recorded in the checkpoint
        if state["precise_bn"]:
            precise_bn.recompute(networks(method), loaders.precise_bn(), config.precise_bn_batches, config.size,
                                 device, autocast)
        if validating(config, epoch):
            record["val_top1"] = validate(method.rgb, "rgb", loaders, config, device, autocast)
            if hasattr(method, "tg"):  # the teacher's accuracy: inference never uses it
                record["val_top1_tg"] = validate(method.tg, "tg", loaders, config, device, autocast)
            if record["val_top1"] > state["best"]:
                state.update(best=record["val_top1"], best_epoch=epoch + 1)
        state["epoch"] = epoch + 1
        if rank == 0:
            tqdm.write(epoch_line(record, config.epochs), file=sys.stderr)  # progress, beside the bar
            with open(out / "metrics.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            save_checkpoint(out, method, optimizer, config, classes, state, best=state["best_epoch"] == epoch + 1)
            plot_curves(out / "metrics.jsonl", out / "curves.png")
    summary = {"rank": rank, "method": config.method, "best_top1": state["best"], "best_epoch": state["best_epoch"],
               "chance": 1 / len(classes), "epochs": config.epochs, "minutes": (time.perf_counter() - started) / 60,
               "out": str(out)}
    if dist.is_initialized():  # torchrun, even with one process: every rank done with every collective first
        dist.barrier()
        dist.destroy_process_group()
    return summary


def epoch_line(record: dict, epochs: int) -> str:
    """One line per epoch: the mean loss, val top-1 of RGB (and TG for ltg), and the pseudo-labels kept and right."""
    parts = [f"epoch {record['epoch']}/{epochs}", f"loss {record['loss']:.3f}"]
    if "val_top1" in record:
        parts.append(f"val top-1 {record['val_top1']:.1f} %")
    if "val_top1_tg" in record:
        parts[-1] += f" (TG {record['val_top1_tg']:.1f} %)"
    if "mask_rate" in record:
        parts.append(f"pseudo-labels kept {100 * record['mask_rate']:.0f} %, right {100 * record['pseudo_acc']:.0f} %")
    return " | ".join(parts)


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


class StepStats:
    """Sums of the steps' statistics, kept on the device; read with one transfer when shown or logged."""

    def __init__(self):
        self.sums, self.last, self.steps = {}, {}, 0

    def add(self, stats: dict) -> None:
        for key, value in stats.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.last, self.steps = stats, self.steps + 1

    def latest(self, key: str) -> float:
        return float(self.last[key])

    def means(self) -> dict:
        values = torch.stack(list(self.sums.values())).tolist() if self.sums else []
        return {key: value / self.steps for key, value in zip(self.sums, values)}


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


def validate(net, modality: str, loaders: RunLoaders, config, device, autocast) -> float:
    """Top-1 (%) of one network on one centre clip per val video, centre-cropped at the training size (the
    reference's val pipeline), over all ranks. Eager even when compiled: a few batches of other shapes, in eval mode,
    would each cost a compilation."""
    with torch.compiler.set_stance("force_eager"):
        return evaluate(net, loaders.val(modality), device, autocast, crop=config.size, modality=modality)["top1"]


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
    checkpoint = read_checkpoint(ckpt)
    config = checkpoint_config(checkpoint, ckpt)
    classes, source = checkpoint["classes"], Data(data_root, storage)
    source.check_cache(streams=1, workers=workers, shuffle=data.SHUFFLE)  # PreciseBN's stream, then the test's
    if source.dataset["classes"] != classes:
        raise UserError(f"{ckpt}: trained on {len(classes)} classes that differ from those of {source.location}; "
                        "evaluate on the dataset it was trained on")
    method = build_method(config, len(classes))
    load_weights(method, checkpoint, ckpt)
    method.to(device)
    if config.precise_bn_batches and not checkpoint.get("precise_bn"):
        recompute_bn({"rgb": method.rgb}, config, pool_shards(source), len(classes), device, autocast, workers)
    return method.rgb, config, classes, source


def test_stream(config: TrainConfig, source: Data, clips, crops, batch_size, workers, classes: int):
    stream = data.eval_stream(source.shards("val"), batch_size=batch_size, clip_len=config.clip_len,
                              interval=config.frame_interval, size=config.load_size,
                              clips=clips or config.test_clips, crops=int(crops or config.test_crops), classes=classes)
    return data.loader(stream, workers)


def test_crop(config: TrainConfig) -> int | None:
    """"full": the network sees the whole load_size squares (the paper's test views, a larger scale than it
    trained at; fully convolutional, it pools over any size); "center": their centre crop at the training size."""
    return config.size if config.test_views == "center" else None


def evaluate_checkpoint(ckpt, data, clips, crops, batch_size, workers, device, storage: Storage = Storage()) -> str:
    """`tgtrain eval`: clips x crops views per video (squares along the long side, as test_views says), RGB only,
    as a printable report."""
    device, autocast = device_and_autocast(device)
    net, config, classes, source = trained_rgb_net(ckpt, data, storage, device, autocast, workers)
    stream = test_stream(config, source, clips, crops, batch_size, workers, len(classes))
    return format_report(evaluate(net, stream, device, autocast, crop=test_crop(config)), classes)


def predict_checkpoint(ckpt, data, out, clips, crops, batch_size, workers, device, storage: Storage = Storage()) -> int:
    """`tgtrain predict`: per-video scores and pooled features to HDF5; returns the number of videos."""
    device, autocast = device_and_autocast(device)
    net, config, classes, source = trained_rgb_net(ckpt, data, storage, device, autocast, workers)
    stream = test_stream(config, source, clips, crops, batch_size, workers, len(classes))
    return write_predictions(net, stream, device, autocast, out, classes, crop=test_crop(config))
