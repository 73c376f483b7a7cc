"""Classify video files with a trained checkpoint (`tgtrain predict --video`), without shards: each file decoded as
`tgprep build` decoded the training data (the short side and frame rate that the checkpoint records), cut into the
run's test views exactly as evaluation cuts them (tgtrain.clips.test_views), and scored by the RGB network.

The frames differ from the shards' only by the shards' JPEG step (quality 90), so a file's scores are close to, not
equal to, those of its sample in a build.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from tgprep.errors import UserError
from tgprep.sample import select_frames
from tgprep.video import Video, VideoError, VideoStream
from tgtrain.checkpoint import checkpoint_input, trained_rgb
from tgtrain.clips import test_views
from tgtrain.evaluate import view_scores

MAX_FRAME_BYTES = 2 << 30  # a video's decoded frames held at once: about 4 minutes at 256p and 30 fps
VIEWS_PER_PASS = 30  # clips through the network at once, as eval's batches of 4 videos x 3 crops
TOP = 5


def decode_video(path: Path, short_side: int, timeout: float = 300.0) -> Video:
    """Every frame of a video file at the short side (tgprep.video's decoder), within MAX_FRAME_BYTES."""
    try:
        with VideoStream(path, short_side, timeout) as stream:
            most = MAX_FRAME_BYTES // (stream.size[0] * stream.size[1] * 3)
            frames = []
            for frame in stream:
                if len(frames) == most:
                    raise UserError(f"{path}: more than {most} frames at short side {short_side} "
                                    f"({MAX_FRAME_BYTES >> 30} GiB), longer than predict --video takes; cut out the "
                                    "part to classify, e.g. ffmpeg -ss 0 -t 60 -i IN OUT.mp4")
                frames.append(frame)
    except VideoError as e:
        raise UserError(f"{path}: {e}; give video files (anything ffmpeg decodes)") from None
    return Video(np.stack(frames), stream.fps, stream.source_size)


def kept_frames(video: Video, fps: float | None) -> np.ndarray:
    """The numbers of the frames a build at --fps keeps (all of them without --fps), as tgprep chooses them."""
    return select_frames(len(video.frames), video.fps, fps)


def classify(ckpt: Path, videos: list[Path], clips: int | None, crops: int | None, device: str):
    """Yield, per video file in order, {"path", "frames", "fps", "size", "top5": [{"class", "label",
    "probability"}, ...]}, best first. clips, crops: the test views (None: the run's test_clips and test_crops)."""
    from tgtrain.engine import device_and_autocast, test_crop  # the engine imports the whole trainer

    for path in map(Path, videos):
        if not path.is_file():
            raise UserError(f"{path}: {'not a file' if path.exists() else 'no such file'}; give video files")
    device, autocast = device_and_autocast(device)
    net, config, checkpoint = trained_rgb(ckpt)
    spec, classes = checkpoint_input(checkpoint, ckpt), checkpoint["classes"]
    if config.precise_bn_batches and not checkpoint.get("precise_bn"):
        print(f"warning: {ckpt} was saved without PreciseBN's statistics, and predict --video has no training data "
              "to compute them on: its scores may be off (best.pt, and the last epoch's last.pt, have them)",
              file=sys.stderr)
    net.to(device).eval()
    clips, crops = clips or config.test_clips, int(crops or config.test_crops)
    for path in videos:
        video = decode_video(Path(path), spec["short_side"])
        kept = kept_frames(video, spec["fps"])
        views = torch.from_numpy(test_views(lambda unique: video.frames[kept[unique]], len(kept), config.clip_len,
                                            config.frame_interval, clips, crops, config.load_size))
        scores = sum(len(part) * view_scores(net, part[None], device, autocast, crop=test_crop(config))[0][0]
                     for part in views.split(VIEWS_PER_PASS)) / len(views)  # the mean over all the views
        best = scores.topk(min(TOP, len(classes)))
        yield {"path": str(path), "frames": len(kept), "fps": spec["fps"] or video.fps, "size": list(video.size),
               "top5": [{"class": classes[i], "label": i, "probability": p}
                        for p, i in zip(best.values.tolist(), best.indices.tolist())]}


def format_result(result: dict) -> str:
    """A file's lines: the file and what was seen of it, then the top classes with their probabilities."""
    width, height = result["size"]
    lines = [f"{result['path']}  ({result['frames']} frames at {result['fps']:.4g} fps, {width}x{height})"]
    lines += [f"  {100 * top['probability']:5.1f} %  {top['class']}" for top in result["top5"]]
    return "\n".join(lines)


def write_json(path: Path, ckpt: Path, results: list[dict]) -> None:
    try:
        path.write_text(json.dumps({"checkpoint": str(ckpt), "videos": results}, indent=1) + "\n")
    except OSError as e:
        raise UserError(f"{path}: cannot write it ({e.strerror or e}); give another --json") from None
