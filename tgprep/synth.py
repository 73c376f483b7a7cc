"""The built-in synthetic dataset: classes told apart only by motion, written like HMDB-51 with split files."""

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tgprep.errors import UserError
from tgprep.video import encode_video


@dataclass
class SynthConfig:
    classes: int = 6              # how many of MOTIONS to use, in label order
    videos_per_class: int = 60    # videos written per class (at least 2: every class needs a train and a test video)
    frames: int = 48              # frames per video
    width: int = 80               # frame width in pixels (even: the encoder stores 4:2:0 colour)
    height: int = 60              # frame height in pixels (even)
    noise: float = 0.0            # std of pixel noise, in grey levels, fresh in every frame
    distractors: int = 0          # small discs drifting in random directions, the same for every class
    speed: float = 2.0            # every motion's rate per frame, times the rates in MOTIONS (periods divided by it)
    plain: bool = True            # one colour pair and a flat grey background for every video (see looks())
    fps: float = 25.0             # frame rate written in the files
    seed: int = 0                 # video v of class c is drawn from default_rng([seed, 0, c, v]) alone


# Class names in label order, each with what moves. The main object's shape, colours, texture, size,
# position and the background are drawn the same way for every class, and every class starts from the
# drawn state at frame 0, so a single frame does not tell the class. Every class is closed under a
# horizontal flip: where a motion has a left/right or clockwise sense, it is drawn at random (see mirror()).
#
# The rates below are at speed 1, where they were chosen for clips of 8 frames 8 apart: each motion stays
# visible at that stride and does not alias to standing still (periods near 8 or 4 frames would look frozen,
# 16 would flip between two poses). The default speed 2 doubles every rate: the tiny preset's clips, 8 frames
# 2 apart, then see the object move as far between sampled frames as 4 frames apart at speed 1, continuously. Fast
# oscillation (period 11-13 frames) is seen at stride 8 as 0.27-0.38 cycles per sample, slow (40-56) as
# 0.14-0.20, so the two stay apart even aliased; frame-to-frame speed (the temporal gradient) differs x4.
# Pulse (20-28) is seen as 0.29-0.40, blinking (a swap every 5.5-7.5 frames) changes in 55-95 % of samples,
# and a turn of 24-44 degrees per sample stays under 45, half the 90-degree symmetry of a square or cross.
# Drifts and growth wrap around within the start ranges, so the object never leaves the frame and their
# positions and sizes stay spread as at the start.
MOTIONS = {
    "stand_still": "nothing moves but the noise and the distractors",
    "move_up": "drifts up, 0.06-0.13 of the frame per 8 frames, jumping back down at the top",
    "move_down": "drifts down like move_up",
    "move_sideways": "drifts left or right (drawn at random) like move_up",
    "oscillate_fast": "swings back and forth, horizontally or vertically, period 11-13 frames",
    "oscillate_slow": "swings like oscillate_fast, period 40-56 frames",
    "grow": "grows x1.13-1.27 per 8 frames, and starts small again past the largest size",
    "shrink": "shrinks like grow, and starts large again past the smallest size",
    "rotate": "turns 24-44 degrees per 8 frames, clockwise or anticlockwise (drawn at random)",
    "blink": "its two colours swap every 5.5-7.5 frames (every frame alone looks like a normal object)",
    "orbit": "circles clockwise or anticlockwise, period 40-56 frames",
    "pulse": "swells and shrinks, a factor 1.5-1.8 between smallest and largest, period 20-28 frames",
}

SHAPES = ("disc", "square", "triangle", "cross")
POSITION = (0.2, 0.8)             # range of the object centre, as a fraction of the frame; drifts wrap in it
SIZE = (0.12, 0.3)                # range of the object radius, as a fraction of the height; growth wraps in it


def motion_params(class_name: str, rng) -> dict:
    """The motion of one video of class_name: velocities, oscillations, spin and blinking, all per frame.

    Positions are fractions of the frame, sizes are log radius, angles radians, periods frames.
    """
    p = dict(drift_x=0.0, drift_y=0.0, growth=0.0, spin=0.0, period=1.0, amp_x=0.0, amp_y=0.0, amp_size=0.0,
             phase_x=0.0, phase_y=0.0, phase_size=0.0, blink=0.0, blink_phase=0.0)
    sign = rng.choice([-1.0, 1.0])
    phase = rng.uniform(0, 2 * np.pi)
    match class_name:
        case "stand_still":
            pass
        case "move_up" | "move_down" | "move_sideways":
            speed = rng.uniform(0.008, 0.016)
            if class_name == "move_sideways":
                p["drift_x"] = sign * speed
            else:
                p["drift_y"] = speed if class_name == "move_down" else -speed
        case "oscillate_fast" | "oscillate_slow":
            p["period"] = rng.uniform(11, 13) if class_name == "oscillate_fast" else rng.uniform(40, 56)
            axis = "x" if rng.random() < 0.5 else "y"
            p["amp_" + axis], p["phase_" + axis] = sign * rng.uniform(0.06, 0.1), phase
        case "grow" | "shrink":
            p["growth"] = rng.uniform(0.015, 0.03) * (1 if class_name == "grow" else -1)
        case "rotate":
            p["spin"] = sign * np.radians(rng.uniform(3, 5.5))
        case "blink":
            p["blink"] = rng.uniform(5.5, 7.5)
            p["blink_phase"] = rng.random()
        case "orbit":
            p["period"] = rng.uniform(40, 56)
            p["amp_y"] = rng.uniform(0.06, 0.1)
            p["amp_x"] = sign * p["amp_y"]  # the sign of amp_x decides the direction
            p["phase_x"], p["phase_y"] = phase, (phase + np.pi / 2) % (2 * np.pi)
        case "pulse":
            p["period"] = rng.uniform(20, 28)
            p["amp_size"] = rng.uniform(0.2, 0.3)
            p["phase_size"] = phase
        case _:
            raise UserError(f"unknown synthetic class {class_name!r}; known: {', '.join(MOTIONS)}")
    return p


def mirror(params: dict) -> dict:
    """The motion parameters that, from the mirrored start state (x -> 1 - x, angle -> -angle), draw the
    horizontally flipped trajectory. A class is flip invariant when motion_params can draw these for it too.
    """
    return {**params, "drift_x": -params["drift_x"], "amp_x": -params["amp_x"], "spin": -params["spin"]}


def start_state(rng) -> dict:
    """Where the main object is at frame 0, drawn the same way for every class."""
    return dict(x=rng.uniform(*POSITION), y=rng.uniform(*POSITION),
                log_size=rng.uniform(*np.log(SIZE)), angle=rng.uniform(0, 2 * np.pi))


def trajectory(params: dict, start: dict, frames: int, speed: float = 1.0) -> dict[str, np.ndarray]:
    """Per frame: centre x, y (fractions of the frame), radius (fraction of the height), angle, colour swap.

    Every term is zero at frame 0, so frame 0 shows the start state whatever the class. speed scales time.
    """
    t = np.arange(frames, dtype=np.float64) * speed

    def swing(amp, phase):
        return amp * (np.sin(2 * np.pi * t / params["period"] + phase) - np.sin(phase))

    def wrap(value, low, high):
        return low + (value - low) % (high - low)

    low, high = np.log(SIZE)
    return dict(
        x=wrap(start["x"] + params["drift_x"] * t, *POSITION) + swing(params["amp_x"], params["phase_x"]),
        y=wrap(start["y"] + params["drift_y"] * t, *POSITION) + swing(params["amp_y"], params["phase_y"]),
        size=np.exp(wrap(start["log_size"] + params["growth"] * t, low, high)
                    + swing(params["amp_size"], params["phase_size"])),
        angle=start["angle"] + params["spin"] * t,
        swap=(np.floor(t / params["blink"] + params["blink_phase"]) % 2 == 1) if params["blink"] else t < 0,
    )


def shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance (about; in radii) to the edge of a shape of radius 1, negative inside.

    Every shape is symmetric under u -> -u, so mirroring a video mirrors its shapes.
    """
    match shape:
        case "disc":
            return np.sqrt(u * u + v * v) - 1
        case "square":
            return np.maximum(abs(u), abs(v)) - 0.75
        case "triangle":  # pointing up (v grows downwards, as image rows do)
            return np.maximum(np.maximum(v, -0.866 * u - 0.5 * v), 0.866 * u - 0.5 * v) - 0.5
        case "cross":
            return np.minimum(np.maximum(abs(u) - 1, abs(v) - 0.35), np.maximum(abs(u) - 0.35, abs(v) - 1))
    raise ValueError(shape)


def looks(rng, config: SynthConfig) -> dict:
    """Everything about a video that is not motion: shape, texture, colours, background, distractors.

    plain: light and dark stripes on a mid-grey background in every video. Measured with the tiny preset: when
    colours and backgrounds are drawn per video, an RGB 3D-CNN trained from scratch on a few hundred videos fits
    its training videos by their look (training loss 1.8 -> 1.1 on 6 classes) and stays at chance on new ones;
    with the plain look, the same network learns the motions (55 % in 3 epochs). Shape, stripes, size and
    position stay drawn per video.
    """
    colour = rng.uniform(0, 256, 3)
    waves = rng.integers(1, 3)  # one wave: stripes; two at right angles: a checkerboard
    angle = rng.uniform(0, np.pi)
    d = config.distractors
    return dict(
        shape=SHAPES[rng.integers(len(SHAPES))],
        # plain: light on dark; else 128 apart in every channel: the texture always shows
        colours=np.array([[235.0] * 3, [20.0] * 3]) if config.plain else np.stack([colour, (colour + 128) % 256]),
        wave_angles=angle + np.pi / 2 * np.arange(waves), wave_phases=rng.uniform(0, 2 * np.pi, waves),
        wavelength=float(rng.uniform(0.35, 0.7)),  # in radii
        background=np.full((2, 3), 110.0) if config.plain else rng.uniform(0, 256, (2, 3)),
        background_angle=rng.uniform(0, 2 * np.pi),
        dots_start=rng.uniform(0, 1, (d, 2)), dots_velocity=rng.uniform(-0.012, 0.012, (d, 2)),
        dots_radius=rng.uniform(0.03, 0.07, d), dots_colour=rng.uniform(0, 256, (d, 3)),
    )


def render(params: dict, config: SynthConfig, rng) -> np.ndarray:
    """The (T, H, W, 3) uint8 frames of one video with the given motion; rng draws everything else."""
    start, look = start_state(rng), looks(rng, config)
    path = {k: v.astype(np.float32) for k, v in trajectory(params, start, config.frames, config.speed).items()}
    t, h, w = config.frames, config.height, config.width
    # Pixel centres as fractions of the frame, so that x -> 1 - x mirrors pixels exactly.
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, None, :]
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[None, :, None]
    # Channels first: numpy is slow when the last axis has length 3.
    image = np.empty((3, t, h, w), np.float32)
    image[:] = background(look, x, y)
    for start_xy, velocity, radius, colour in zip(look["dots_start"], look["dots_velocity"],
                                                  look["dots_radius"], look["dots_colour"]):
        centre = ((start_xy + velocity * np.arange(t)[:, None]) % 1.0).astype(np.float32)
        dx, dy = torus_offset(x, centre[:, 0]) * w, torus_offset(y, centre[:, 1]) * h
        paint(image, np.sqrt(dx * dx + dy * dy) - np.float32(radius * h), colour)
    paint_object(image, path, look, x, y)
    image += grain(rng, image.shape, config.noise)
    np.clip(np.rint(image, out=image), 0, 255, out=image)
    return image.transpose(1, 2, 3, 0).astype(np.uint8, order="C")


def grain(rng, shape: tuple, std: float) -> np.ndarray:
    """Zero-mean pixel noise of the given std: the sum of two uniform bytes (triangular, near Gaussian).

    Drawn as bytes because Gaussian floats took most of the rendering time.
    """
    two = rng.integers(0, 256, (2, *shape), dtype=np.uint8)
    return (two[0].astype(np.float32) + two[1] - 255) * np.float32(std / np.sqrt(2 * (256**2 - 1) / 12))


def background(look: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A linear gradient between two colours, in a random direction: (3, 1, H, W)."""
    along = (x - 0.5) * np.cos(look["background_angle"]) + (y - 0.5) * np.sin(look["background_angle"])
    weight = (along + 0.71) / 1.42  # |along| <= 0.71 on the frame
    return column(look["background"][0]) * (1 - weight) + column(look["background"][1]) * weight


def paint_object(image: np.ndarray, path: dict, look: dict, x: np.ndarray, y: np.ndarray) -> None:
    """Paint the main object along its path: shape and texture turn with it, the texture's colours swap on blinks."""
    _, t, h, w = image.shape

    def per_frame(values):
        return values[:, None, None]

    radius = per_frame(path["size"]) * h
    dx, dy = (x - per_frame(path["x"])) * w, (y - per_frame(path["y"])) * h
    cos, sin = np.cos(per_frame(path["angle"])), np.sin(per_frame(path["angle"]))
    u, v = (dx * cos + dy * sin) / radius, (dy * cos - dx * sin) / radius  # object coordinates, in radii
    stripes = np.ones_like(u)
    for angle, phase in zip(look["wave_angles"].tolist(), look["wave_phases"].tolist()):  # Python floats keep float32
        stripes *= np.sin(2 * math.pi * (u * math.cos(angle) + v * math.sin(angle)) / look["wavelength"] + phase)
    first = np.clip(0.5 + 2 * stripes, 0, 1)  # sharpened, still smooth at the stripe edges
    first = np.where(per_frame(path["swap"] > 0), 1 - first, first)
    one, other = column(look["colours"][0]), column(look["colours"][1])
    paint(image, shape_distance(look["shape"], u, v) * radius, other + first * (one - other))


def torus_offset(position: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """position - centre on a circle of length 1, so that distractors leaving one side enter the other."""
    return (position - centre[:, None, None] + 0.5) % 1.0 - 0.5


def paint(image: np.ndarray, distance: np.ndarray, colour: np.ndarray) -> None:
    """Paint colour into image where distance (pixels) is negative, with a one-pixel soft edge against aliasing."""
    alpha = np.clip(0.5 - distance, 0, 1)
    image += alpha * ((column(colour) if colour.ndim == 1 else colour) - image)


def column(colour: np.ndarray) -> np.ndarray:
    """An RGB colour shaped (3, 1, 1, 1), to broadcast over channels-first frames."""
    return colour.astype(np.float32).reshape(3, 1, 1, 1)


def split_ids(count: int, rng) -> np.ndarray:
    """HMDB-style ids for a class of count videos: about 10 % 0 (unused), then 70 % 1 (train), 30 % 2 (test)."""
    unused = (count + 5) // 10
    test = max(1, round(0.3 * (count - unused)))
    ids = np.array([0] * unused + [2] * test + [1] * (count - unused - test))
    return ids[rng.permutation(count)]


def generate(out: Path, config: SynthConfig, workers: int = 0) -> dict:
    """Write the dataset under out: videos, split files, classes.txt, and synth.json last.

    A folder already holding this config is left as it is; any other non-empty folder is refused.
    """
    check(config)
    began = time.perf_counter()
    out = Path(out)
    classes = list(MOTIONS)[:config.classes]
    summary = dict(out=str(out), classes=len(classes), videos=len(classes) * config.videos_per_class,
                   frames=config.frames, size=[config.width, config.height], made=False)
    if already_there(out, config):
        return summary
    tasks = [(out, config, c, v) for c in range(len(classes)) for v in range(config.videos_per_class)]
    for name in classes:
        (out / name).mkdir(parents=True, exist_ok=True)
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    bar = dict(total=len(tasks), unit="video", desc="synth", disable=None)
    if workers == 1:
        list(tqdm(map(make_video, tasks), **bar))
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(tqdm(pool.map(make_video, tasks, chunksize=4), **bar))
    write_splits(out, classes, config)
    (out / "classes.txt").write_text("".join(name + "\n" for name in classes))
    record = out / "synth.json"
    partial = record.with_suffix(".json.tmp")
    partial.write_text(json.dumps(dict(config=asdict(config), classes=classes), indent=2) + "\n")
    partial.rename(record)
    return {**summary, "made": True, "seconds": round(time.perf_counter() - began, 1)}


def format_summary(summary: dict) -> str:
    """One line for the command line about what generate did."""
    what = (f"{summary['videos']} videos ({summary['classes']} classes, {summary['frames']} frames, "
            f"{summary['size'][0]}x{summary['size'][1]})")
    if not summary["made"]:
        return f"{summary['out']} already holds these {what}; left as it is"
    return f"wrote {what} to {summary['out']} in {summary['seconds']} s"


def make_video(task) -> None:
    out, config, class_index, video_index = task
    name = list(MOTIONS)[class_index]
    rng = np.random.default_rng([config.seed, 0, class_index, video_index])
    frames = render(motion_params(name, rng), config, rng)
    encode_video(out / name / f"{name}_{video_index:03d}.avi", frames, config.fps)


def write_splits(out: Path, classes: list[str], config: SynthConfig) -> None:
    """testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt, in HMDB-51's format: '<video>.avi <id> '."""
    folder = out / "testTrainMulti_7030_splits"
    folder.mkdir(exist_ok=True)
    for c, name in enumerate(classes):
        for split in (1, 2, 3):
            ids = split_ids(config.videos_per_class, np.random.default_rng([config.seed, 1, c, split]))
            lines = [f"{name}_{v:03d}.avi {i} \n" for v, i in enumerate(ids)]
            (folder / f"{name}_test_split{split}.txt").write_text("".join(lines))


def already_there(out: Path, config: SynthConfig) -> bool:
    """True when out holds a finished dataset made with config; False when out is empty or absent."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; choose a folder for --out")
    if not out.exists() or not any(out.iterdir()):
        return False
    record = out / "synth.json"
    if not record.is_file():
        raise UserError(f"{out}: not empty and has no synth.json (a killed run, or another folder); "
                        "delete it or choose an empty --out")
    there = json.loads(record.read_text()).get("config")
    if there != asdict(config):
        raise UserError(f"{record}: made with other settings ({there}); delete the folder or choose another --out")
    return True


def check(config: SynthConfig) -> None:
    problems = []
    if not 1 <= config.classes <= len(MOTIONS):
        problems.append(f"classes must be 1 to {len(MOTIONS)}")
    if config.videos_per_class < 2:
        problems.append("videos per class must be at least 2")
    if config.frames < 2:
        problems.append("frames must be at least 2")
    if config.width < 16 or config.height < 16 or config.width % 2 or config.height % 2:
        problems.append("width and height must be even and at least 16")
    if config.noise < 0 or config.distractors < 0 or config.fps <= 0 or not 0 < config.speed <= 100:
        problems.append("noise and distractors must be >= 0, fps > 0 and speed in (0, 100]")
    if problems:
        raise UserError(f"synthetic dataset settings: {'; '.join(problems)}")
