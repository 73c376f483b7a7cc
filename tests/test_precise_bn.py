"""PreciseBN: after training on strong views, the recomputed statistics are exactly the average over the clean
clips' batches of each BN layer's batch mean and variance, computed here directly from the layers' inputs."""

import copy
from contextlib import nullcontext

import pytest
import torch
from torch import nn

from tests.test_augment import ScalarReads
from tgtrain import augment
from tgtrain.config import make_config
from tgtrain.methods import build_method
from tgtrain.precise_bn import bn_layers, recompute

CONFIG = make_config("tiny", width=4, blocks=(1, 1, 1, 1), proj_dim=8, size=16, load_size=24, clip_len=4,
                     frame_interval=2, batch_size=4)


def batch(generator, labels=True) -> dict:
    shape = (CONFIG.batch_size, CONFIG.clip_len, CONFIG.load_size, CONFIG.load_size, 3)
    label = torch.randint(3, (CONFIG.batch_size,), generator=generator)
    return {"rgb": torch.randint(256, shape, dtype=torch.uint8, generator=generator),
            "tg": torch.randint(96, 160, shape, dtype=torch.uint8, generator=generator),
            "label": label, "true_label": label}


def direct_statistics(net: nn.Module, clips: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BN layer: the mean over batches of the per-channel mean and unbiased variance of its input."""
    seen = {bn: [] for bn in bn_layers(net)}
    hooks = [bn.register_forward_pre_hook(lambda m, args: seen[m].append(args[0].detach().double())) for bn in seen]
    net.train()
    with torch.no_grad():
        for x in clips:
            net(augment.normalize(augment.center_crop(x, CONFIG.size)))
    for hook in hooks:
        hook.remove()
    stats = []
    for inputs in seen.values():
        per_channel = [x.transpose(0, 1).flatten(1) for x in inputs]  # (C, everything else)
        stats.append((torch.stack([x.mean(1) for x in per_channel]).mean(0),
                      torch.stack([x.var(1, unbiased=True) for x in per_channel]).mean(0)))
    return stats


def test_precise_bn_after_strong_view_training_matches_a_direct_computation():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    method = build_method(CONFIG, 3)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):  # strong views of the unlabeled batch pass through both networks' BN layers
        loss, _ = method(batch(generator), batch(generator), True, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pool = [batch(generator) for _ in range(3)]
    nets = {"rgb": method.rgb, "tg": method.tg}
    expected = {m: direct_statistics(copy.deepcopy(net), [b[m] for b in pool]) for m, net in nets.items()}
    before = [bn.running_mean.clone() for net in nets.values() for bn in bn_layers(net)]
    method.eval()

    recompute(nets, iter(pool), len(pool), CONFIG.size, torch.device("cpu"), nullcontext())

    after = [bn.running_mean for net in nets.values() for bn in bn_layers(net)]
    assert not any(torch.allclose(a, b, atol=1e-4) for a, b in zip(after, before))  # the training averages differ
    for modality, net in nets.items():
        layers = bn_layers(net)
        assert len(layers) == len(expected[modality]) == 15  # backbone (stem, 4 blocks x 2, 3 shortcuts) + projection
        for bn, (mean, var) in zip(layers, expected[modality]):
            torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-4, atol=1e-5)
            assert bn.momentum == 0.1  # restored for training
        assert not net.training  # and the mode it was in


def test_precise_bn_reads_no_value_back():
    """Every BN layer, every batch: no value of a tensor is read into Python, so on CUDA nothing waits on the device.
    torch's cumulative mode (momentum None) reads each layer's batch count back; the 1 / k momentum does not."""
    generator = torch.Generator().manual_seed(0)
    method = build_method(CONFIG, 3)
    pool = [batch(generator) for _ in range(2)]
    with ScalarReads() as mode:
        recompute({"rgb": method.rgb, "tg": method.tg}, iter(pool), len(pool), CONFIG.size, torch.device("cpu"),
                  nullcontext())
    assert mode.reads == 0
    bn = bn_layers(method.rgb)[0]
    bn.momentum = None
    with ScalarReads() as mode:  # the mode sees the reads it is there to count
        method.rgb.train()(augment.normalize(augment.center_crop(pool[0]["rgb"], CONFIG.size)))
    assert mode.reads == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_precise_bn_makes_no_host_sync_on_cuda():
    """Under torch.cuda.set_sync_debug_mode("error") every synchronising call (a value read, a blocking copy)
    raises."""
    generator = torch.Generator().manual_seed(0)
    method = build_method(CONFIG, 3).cuda()
    pool = [{k: v.pin_memory() for k, v in batch(generator).items()} for _ in range(3)]
    nets, device = {"rgb": method.rgb, "tg": method.tg}, torch.device("cuda")
    recompute(nets, iter(pool), len(pool), CONFIG.size, device, nullcontext())  # cuDNN's first calls
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        recompute(nets, iter(pool), len(pool), CONFIG.size, device, nullcontext())
    finally:
        torch.cuda.set_sync_debug_mode("default")
