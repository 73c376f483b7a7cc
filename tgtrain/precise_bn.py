"""Batch-norm statistics: PreciseBN, and the same statistics on every rank under DDP.

During training a BN layer's running mean and variance are an exponential average over batches seen while the
weights kept changing, and over augmented (strong) views, so they describe no one model and not the clean clips it
is tested on. PreciseBN, as the reference's PreciseBNHook (after fvcore's), recomputes them with the weights fixed:
the plain average, over a number of batches of clean training-pool clips, of each batch's mean and (unbiased)
variance, in train mode, without gradients.

The average is kept as BN's own running update with momentum 1 / k at the k-th batch, which makes it the
cumulative mean. torch's cumulative mode (momentum None) would give the same numbers, but it reads each layer's
batch counter back to the host (float(num_batches_tracked)) on every batch: on a GPU, a wait for the device in
every BN layer, 30 per network per batch for R3D-18.
"""

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from tgtrain import augment


def bn_layers(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute(nets: dict[str, nn.Module], batches, count: int, size: int, device, autocast) -> None:
    """Replace the BN statistics of every network in `nets` (modality -> network; all the BN layers its forward
    uses: backbone and heads) by their average over `count` batches, each network fed its modality's clips.

    The clean view of a clip is its centre crop at the training size, without flip or strong ops: the reference's
    val pipeline on the training pool. Under DDP every rank must pass the same `count`: with SyncBatchNorm each
    forward is a collective (every rank then holds the global statistics already); without it the ranks'
    averages are averaged at the end. The networks run eagerly even when compiled: a compiled BN layer would
    compile again for each new momentum.
    """
    layers = [bn for net in nets.values() for bn in bn_layers(net)]
    momenta, modes = [bn.momentum for bn in layers], [net.training for net in nets.values()]
    for bn in layers:
        bn.reset_running_stats()
    for net in nets.values():
        net.train()
    seen = 0
    with torch.compiler.set_stance("force_eager"):
        for batch in tqdm(batches, total=count, desc="precise BN", unit="batch", leave=False, dynamic_ncols=True,
                          disable=rank() != 0 or None):
            seen += 1
            for bn in layers:
                bn.momentum = 1 / seen  # running = the mean over the `seen` batches so far
            for modality, net in nets.items():
                clips = augment.center_crop(batch[modality].to(device, non_blocking=True), size)
                with autocast:
                    net(augment.normalize(clips))
    if seen != count:
        raise RuntimeError(f"PreciseBN got {seen} batches, expected {count}")  # a stream that ended early: a bug
    for bn, momentum in zip(layers, momenta):
        bn.momentum = momentum
    for net, mode in zip(nets.values(), modes):
        net.train(mode)
    for net in nets.values():
        average_across_ranks(net)


def average_across_ranks(module: nn.Module) -> None:
    """Average the floating-point buffers (BN statistics) over all ranks; nothing without torch.distributed.

    DDP keeps the parameters equal, but each rank updates its BN running statistics from its own batches after
    DDP broadcasts rank 0's: averaged, every rank validates, and rank 0 saves, one and the same model."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)  # a sum: gloo has no average
            buffer /= dist.get_world_size()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
