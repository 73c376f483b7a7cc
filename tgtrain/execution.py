"""How the networks execute: eagerly or compiled by torch.compile, in the contiguous or the channels_last_3d memory
format. Settings of speed, not of results: the losses agree within float rounding (tests/test_execution.py).

Why they exist: at the paper's 5 + 5 clips per GPU the eager step of two R3D-18s is bound by kernel launches and
host work, not by the GPU's arithmetic (bench/gpu.py, BENCHMARKS.md). torch.compile fuses the element-wise work
around each convolution (BN, ReLU, the residual adds) into fewer kernels; "reduce-overhead" also replays the
compiled step as CUDA graphs, which removes most launches. channels_last_3d lets cuDNN pick its channels-last
convolutions, often faster on tensor cores. Only the two networks are compiled: the strong augmentation draws its
ops per clip, so a compiled version would recompile or break its graph at every new draw.
"""

import torch
from torch import nn

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


def prepare(nets: dict[str, nn.Module], compile: str, channels_last: bool) -> None:
    """Set each network (modality -> module, in place, so state_dict keys stay the same) to the chosen format and
    compile mode."""
    for net in nets.values():
        if channels_last:
            net.to(memory_format=torch.channels_last_3d)
        if compile != "off":
            net.compile(mode=compile)


def input_format(channels_last: bool) -> torch.memory_format:
    """The memory format the networks' input should come in."""
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def graph_breaks() -> tuple[int, list[str]]:
    """How many graph breaks torch.compile has met in this process, and the most frequent reasons: each break splits
    a compiled graph in two, with eager Python between the pieces."""
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]
    return sum(breaks.values()), [reason for reason, _ in breaks.most_common(3)]


def compile_note(mode: str) -> str | None:
    """The line `tgtrain run` prints after its first epoch when compiling: the graph breaks met, if any."""
    if mode == "off":
        return None
    count, reasons = graph_breaks()
    if not count:
        return f"compile ({mode}): every network compiled whole, no graph breaks"
    return (f"compile ({mode}): {count} graph breaks, each a return to eager Python mid-network; most frequent: "
            + "; ".join(r.splitlines()[0][:120] for r in reasons))
