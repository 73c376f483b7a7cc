"""The speed settings change no result: LTG steps compiled (torch.compile, inductor) and in channels_last_3d give the
eager steps' losses within float rounding, and the graph breaks are counted."""

from contextlib import nullcontext

import pytest
import torch

from tgtrain import execution
from tgtrain.config import make_config
from tgtrain.engine import networks, train_step
from tgtrain.methods import build_method

CONFIG = dict(width=4, blocks=(1, 1, 1, 1), proj_dim=8, size=16, load_size=16, clip_len=4, frame_interval=2,
              batch_size=4)


def batch(generator) -> dict:
    shape = (CONFIG["batch_size"], CONFIG["clip_len"], CONFIG["size"], CONFIG["size"], 3)
    label = torch.randint(3, (CONFIG["batch_size"],), generator=generator)
    return {"rgb": torch.randint(256, shape, dtype=torch.uint8, generator=generator),
            "tg": torch.randint(96, 160, shape, dtype=torch.uint8, generator=generator),
            "label": label, "true_label": label}


def losses(steps: int, compile: str = "off", channels_last: bool = False) -> list[float]:
    """The losses of `steps` LTG steps (strong views, every loss, SGD) from the same weights and batches."""
    config = make_config("tiny", **CONFIG, compile=compile, channels_last=channels_last)
    torch.manual_seed(0)
    method = build_method(config, 3)
    execution.prepare(networks(method), config.compile, config.channels_last)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    return [float(train_step(method, optimizer, batch(generator), batch(generator), True, generator, nullcontext(),
                             config.clip_grad)["loss"]) for _ in range(steps)]


@pytest.fixture(scope="module")
def eager() -> list[float]:
    return losses(3)


def test_compiled_steps_give_the_eager_losses(eager):
    torch._dynamo.reset()
    assert losses(3, compile="default") == pytest.approx(eager, rel=1e-3)
    count, reasons = execution.graph_breaks()
    assert count == 0, reasons  # the networks compile whole
    assert execution.compile_note("default") == "compile (default): every network compiled whole, no graph breaks"
    assert execution.compile_note("off") is None


def test_channels_last_steps_give_the_eager_losses(eager):
    assert losses(3, channels_last=True) == pytest.approx(eager, rel=1e-3)
    config = make_config("tiny", **CONFIG, channels_last=True)
    method = build_method(config, 3)
    execution.prepare(networks(method), "off", True)
    conv = method.rgb.backbone.stem[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()


def test_graph_breaks_are_counted_with_their_reasons():
    torch._dynamo.reset()

    @torch.compile(backend="eager")
    def broken(x):
        x = x + 1
        print("a print is a graph break")
        return x * 2

    before, _ = execution.graph_breaks()
    broken(torch.ones(2))
    after, reasons = execution.graph_breaks()
    assert after == before + 1 and reasons
    assert execution.compile_note("default").startswith("compile (default): ")


def test_compile_is_a_checked_setting():
    from tgprep.errors import UserError

    with pytest.raises(UserError, match="compile 'fast': unknown; choose one of off, default"):
        make_config("tiny", settings=["compile=fast"])
