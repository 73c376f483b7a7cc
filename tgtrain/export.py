"""`tgtrain export`: a checkpoint's RGB network as a torch.export program, which any program with torch runs without
tgtrain: uint8 clips in, logits out, with the test views' centre crop (test_views "center") and the normalisation
inside. The file keeps an example input (`program.example_inputs` shows the layout) and carries the class names
and a short text on how to call it (torch.export.save's extra files "classes.json" and "README.txt")."""

import json
from pathlib import Path

import torch
from torch import nn

from tgtrain import augment
from tgtrain.checkpoint import checkpoint_input, trained_rgb
from tgtrain.run_folder import replace_atomically, writing

MAX_CLIPS = 4096  # the largest batch of clips the program takes


class Deployed(nn.Module):
    """uint8 RGB clips (N, T, S, S, 3), cut as tgtrain's test views, -> logits (N, classes)."""

    def __init__(self, net: nn.Module, crop: int | None):
        super().__init__()
        self.net, self.crop = net, crop

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:
            clips = augment.center_crop(clips, self.crop)
        return self.net(augment.normalize(clips)).logits


def export(ckpt: Path, out: Path) -> str:
    """Write the program to `out` (a .pt2 file); returns its README text."""
    from tgtrain.engine import test_crop  # the engine imports the whole trainer

    net, config, checkpoint = trained_rgb(ckpt)
    spec, classes = checkpoint_input(checkpoint, ckpt), checkpoint["classes"]
    shape = (2, config.clip_len, config.load_size, config.load_size, 3)  # 2: a batch of 1 would fix N at 1
    example = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    clips = torch.export.Dim("clips", min=1, max=MAX_CLIPS)
    with torch.no_grad():
        program = torch.export.export(Deployed(net.eval(), test_crop(config)), (example,),
                                      dynamic_shapes=({0: clips},))
    text = how_to(ckpt, out, config, spec, classes, checkpoint)
    files = {"classes.json": json.dumps(classes), "README.txt": text}
    with writing(Path(out).parent, then="run it again"):
        replace_atomically(out, lambda tmp: save(program, tmp, files))
    return text


def save(program, path: Path, extra_files: dict) -> None:
    with open(path, "wb") as f:  # a file object: torch.export warns of a path not ending in .pt2, as a temporary's
        torch.export.save(program, f, extra_files=extra_files)


def how_to(ckpt, out, config, spec, classes, checkpoint) -> str:
    t, s = config.clip_len, config.load_size
    side = f"with its short side at {spec['short_side']} px" if spec["short_side"] else "at its own size"
    fps = f"{spec['fps']:g} frames per second" if spec["fps"] else "every frame"
    crop = f"the centre crop to {config.size} x {config.size} and " if config.test_views == "center" else ""
    return f"""\
The RGB network of {ckpt} ({config.method}, {config.preset} preset, epoch {checkpoint['epoch']}; best val top-1
{checkpoint['best']:.1f} % at epoch {checkpoint['best_epoch']}), exported by tgtrain with torch.export.

Input: uint8 RGB clips (N, {t}, {s}, {s}, 3), N from 1 to {MAX_CLIPS}, cut as `tgtrain eval` cuts them:
  - the video decoded {side}, keeping {fps};
  - a clip is {t} frames, {config.frame_interval} apart (eval takes {config.test_clips} clips spread over the video);
  - each frame is the square of its short side (at the start, centre or end of the long side; eval takes
    {"all three" if config.test_crops == 3 else "the centre"}), resized to {s} x {s}.
Inside: {crop}the normalisation, (x - mean) / std with mean {spec['mean']}
and std {spec['std']} on the 0..255 scale.
Output: logits (N, {len(classes)}). A video's class scores are the mean of its clips' softmax.

    import json, torch
    files = {{"classes.json": "", "README.txt": ""}}
    program = torch.export.load("{Path(out).name}", extra_files=files)
    classes = json.loads(files["classes.json"])
    logits = program.module()(clips)      # clips: torch.uint8, (N, {t}, {s}, {s}, 3)
    print(classes[int(logits.softmax(-1).mean(0).argmax())])

torch.export.load unpickles parts of the file: load only files you trust.
"""
