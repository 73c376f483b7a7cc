"""The losses against values worked out by hand, stop-gradient, mask edges, and the cross-rank gather under gloo."""

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tgtrain.losses import alignment, gather_with_grad, info_nce, pseudo_labels, unlabeled_loss

LN2 = math.log(2)


def test_pseudo_labels_softmax_the_averaged_logits():
    rgb = torch.tensor([[3.0, 0.0, 0.0]])
    tg = torch.tensor([[-3.0, 1.0, 0.0]])
    # averaged logits (0, 0.5, 0): class 1 with e^0.5 / (e^0.5 + 2) = 0.4519. Averaging the probabilities instead,
    # (0.909, 0.045, 0.045) and (0.013, 0.722, 0.266), would pick class 0.
    labels, mask = pseudo_labels(rgb, tg, threshold=0.45)
    assert labels.tolist() == [1] and mask.tolist() == [True]
    assert pseudo_labels(rgb, tg, threshold=0.46)[1].tolist() == [False]


def test_pseudo_labels_weigh_the_modalities_and_equal_weights_are_the_plain_mean():
    rgb = torch.tensor([[3.0, 0.0, 0.0]])
    tg = torch.tensor([[-3.0, 1.0, 0.0]])
    assert pseudo_labels(rgb, tg, threshold=0.45, weights=(1.0, 0.0))[0].tolist() == [0]  # RGB's alone
    labels, mask = pseudo_labels(rgb, tg, threshold=0.5, weights=(0.25, 0.75))  # logits (-1.5, 0.75, 0): class 1
    assert labels.tolist() == [1] and mask.tolist() == [True]  # p = e^0.75 / (e^0.75 + e^-1.5 + 1) = 0.63
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(64, 51, generator=generator) * 4 for _ in range(2))
    probs = torch.stack([a, b]).mean(0).softmax(-1).max(-1)
    for weights in (None, (0.5, 0.5)):
        labels, mask = pseudo_labels(a, b, threshold=0.3, weights=weights)
        assert torch.equal(labels, probs.indices) and torch.equal(mask, probs.values >= 0.3)


def test_pseudo_labels_threshold_edges_and_a_single_modality():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 5.0]], requires_grad=True)
    labels, mask = pseudo_labels(logits, threshold=0.5)  # FixMatch: one modality; p = 0.5 exactly is kept
    assert labels.tolist()[1:] == [0, 1] and mask.tolist() == [True, True, True]
    assert pseudo_labels(logits, threshold=0.0)[1].all()
    assert not pseudo_labels(logits, threshold=1.0)[1].any()
    assert pseudo_labels(logits, threshold=0.9)[1].tolist() == [False, False, True]  # 0.881 and 0.993
    assert not labels.requires_grad and not mask.requires_grad


def test_unlabeled_loss_is_mean_over_the_batch_of_masked_cross_entropy():
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    # CE row 0: -log(1/2) = ln 2; row 1: -log(1/4) = 2 ln 2
    both = unlabeled_loss(logits, labels, torch.tensor([True, True]))
    assert both.item() == pytest.approx(1.5 * LN2)
    assert unlabeled_loss(logits, labels, torch.tensor([True, False])).item() == pytest.approx(LN2 / 2)
    none = unlabeled_loss(logits, labels, torch.tensor([False, False]))
    none.backward()
    assert none.item() == 0 and logits.grad.abs().sum() == 0


def test_alignment_by_hand_and_scale_invariant():
    # stage 1: one clip, 2 channels, 2 locations: (1, 0) vs (1, 0) -> 0 and (1, 0) vs (0, 3) -> 1; mean 0.5
    r1 = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).reshape(1, 2, 1, 1, 2)
    t1 = torch.tensor([[1.0, 0.0], [0.0, 3.0]]).reshape(1, 2, 1, 1, 2)
    # stage 2: (1, 1) vs (1, 0): 1 - 1/sqrt(2)
    r2 = torch.tensor([1.0, 1.0]).reshape(1, 2, 1, 1, 1)
    t2 = torch.tensor([1.0, 0.0]).reshape(1, 2, 1, 1, 1)
    expected = 0.5 + 1 - 1 / math.sqrt(2)
    assert alignment([r1, r2], [t1, t2]).item() == pytest.approx(expected)
    assert alignment([r1, r2], [5 * t1, 0.1 * t2]).item() == pytest.approx(expected)
    assert alignment([r1], [r1]).item() == pytest.approx(0.0, abs=1e-6)


def test_alignment_stops_the_gradient_into_tg():
    r = torch.randn(2, 4, 2, 3, 3, requires_grad=True)
    t = torch.randn(2, 4, 2, 3, 3, requires_grad=True)
    alignment([r], [t]).backward()
    assert t.grad is None
    assert r.grad is not None and r.grad.abs().sum() > 0


def test_info_nce_by_hand():
    eye = torch.eye(2)
    # aligned: logits [[2, 0], [0, 2]]; each row -log(e^2 / (e^2 + 1)) = log(1 + e^-2); two directions summed
    assert info_nce(eye, eye).item() == pytest.approx(2 * math.log(1 + math.exp(-2)))
    assert info_nce(3 * eye, eye / 7).item() == pytest.approx(2 * math.log(1 + math.exp(-2)))
    # swapped: every positive scores 0 against a negative's 2
    assert info_nce(eye, eye.flip(0)).item() == pytest.approx(2 * math.log(1 + math.exp(2)))
    # asymmetric: rgb (1,0), (1,0); tg (1,0), (0,1). RGB -> TG rows [2, 0] -> 0 and [2, 0] -> 1:
    # (log(1 + e^-2) + log(1 + e^2)) / 2; TG -> RGB rows [2, 2] -> 0 and [0, 0] -> 1: ln 2 each
    rgb = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2 + LN2
    assert info_nce(rgb, eye).item() == pytest.approx(expected)
    # temperature 1: aligned rows [1, 0] -> log(1 + e^-1)
    assert info_nce(eye, eye, temperature=1.0).item() == pytest.approx(2 * math.log(1 + math.exp(-1)))


def test_info_nce_aligned_beats_random():
    g = torch.Generator().manual_seed(0)
    aligned = info_nce(torch.eye(8), torch.eye(8)).item()
    assert aligned == pytest.approx(2 * (math.log(math.exp(2) + 7) - 2))
    randoms = [info_nce(torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)).item() for _ in range(20)]
    assert aligned < min(randoms)
    assert np.mean(randoms) == pytest.approx(2 * math.log(8), rel=0.15)


def test_info_nce_similarities_stay_fp32_under_bf16_autocast():
    """Under autocast a @ b.T would run in bf16 (8 bits of mantissa): the loss must be the fp32 one, bit for bit."""
    torch.manual_seed(0)
    z_rgb, z_tg = torch.randn(64, 512), torch.randn(64, 512)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = info_nce(z_rgb, z_tg)
    assert torch.equal(under_autocast, info_nce(z_rgb, z_tg))


def test_gather_is_the_identity_without_distributed():
    z = torch.randn(3, 4)
    assert gather_with_grad(z) is z


def _rank(rank, world, init, z_rgb, z_tg, out):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    rows = slice(rank * 2, rank * 2 + 2)
    a = z_rgb[rows].clone().requires_grad_()
    b = z_tg[rows].clone().requires_grad_()
    loss = info_nce(gather_with_grad(a), gather_with_grad(b))
    loss.backward()
    np.save(f"{out}/{rank}.npy", np.concatenate([[loss.item()], a.grad.flatten(), b.grad.flatten()]))
    dist.barrier()  # without it a rank could tear down gloo while the other still runs backward's collectives
    dist.destroy_process_group()


def test_gathered_info_nce_under_two_gloo_ranks_matches_one_process(tmp_path):
    g = torch.Generator().manual_seed(1)
    z_rgb, z_tg = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    a, b = z_rgb.clone().requires_grad_(), z_tg.clone().requires_grad_()
    loss = info_nce(a, b)
    loss.backward()
    mp.spawn(_rank, args=(2, f"file://{tmp_path}/rendezvous", z_rgb, z_tg, tmp_path), nprocs=2)
    for rank in range(2):
        got = np.load(tmp_path / f"{rank}.npy")
        rows = slice(rank * 2, rank * 2 + 2)
        assert got[0] == pytest.approx(loss.item(), rel=1e-6)
        # every rank computes the global loss and each rank's rows collect both ranks' gradients,
        # so DDP's averaging over the 2 ranks yields the one-process gradient
        np.testing.assert_allclose(got[1:7] / 2, a.grad[rows].flatten().numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got[7:] / 2, b.grad[rows].flatten().numpy(), rtol=1e-5, atol=1e-7)
