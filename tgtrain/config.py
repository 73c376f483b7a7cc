"""TrainConfig: every training setting with a comment, the dataset recipes (presets), and how a run's config is
layered, typed and checked.

defaults  <-  preset  <-  --config file.toml  <-  --set key=value ...  <-  shortcut flags (--epochs, --lr, ...)
The result is saved as config.toml in the run folder and inside every checkpoint. Every way in (a file, --set, a
checkpoint's stored config) goes through the same type and range checks, so a bad value is one line, before anything
is built or allocated. A shorter (or longer) run keeps its recipe's shape: epochs given without the warm-up or the
supervised epochs scale those with the preset's proportions (scale_schedule).
"""

import json
import math
import tomllib
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from tgprep.errors import UserError
from tgtrain.augment import OPS
from tgtrain.execution import COMPILE_MODES

METHODS = ("supervised", "fixmatch", "ltg")
DEVICES = ("auto", "cpu", "cuda")
VIEWS = ("full", "center")


@dataclass
class TrainConfig:
    # data and run
    data: str = ""                      # a `tgprep build` output folder (labeled / unlabeled / val shards)
    out: str = "runs/latest"            # run folder: config.toml, metrics.jsonl, last.pt, best.pt, curves.png
    method: str = "ltg"                 # supervised (RGB, labeled only) | fixmatch (RGB) | ltg (RGB + TG, the paper)
    preset: str = "hmdb51"              # the recipe these values started from (see PRESETS)
    seed: int = 0
    device: str = "auto"                # auto: CUDA (bf16 autocast) when present, else CPU
    workers: int = 4                    # data-loading processes per training process
    # model
    width: int = 64                     # channels of the first stage; 64 = R3D-18
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # residual blocks per stage; (2, 2, 2, 2) = R3D-18
    dropout: float = 0.5                # before each linear classifier
    proj_dim: int = 512                 # width of the contrastive projection MLP
    sync_bn: bool = True                # SyncBatchNorm across GPUs under DDP on CUDA (BN of both networks and heads)
    compile: str = "off"                # torch.compile the networks: off | default | reduce-overhead | max-autotune
    channels_last: bool = False         # the networks in the channels_last_3d memory format (tgtrain/execution.py)
    # clips
    clip_len: int = 8                   # frames per clip
    frame_interval: int = 8             # take every k-th frame: a clip spans clip_len * k frames
    size: int = 224                     # side of the training crop
    load_size: int = 256                # side of the square the loader cuts from each stored frame
    crop_area: float = 0.08             # smallest area of the random resized crop, as a fraction of the frame
    # optimisation
    epochs: int = 360                   # one epoch = one pass over the unlabeled stream (labeled for supervised)
    batch_size: int = 5                 # labeled clips per step per process; the unlabeled batch is as large (mu = 1)
    lr: float = 0.2                     # for lr_clips clips per step; scaled linearly to the real global batch
    lr_clips: int = 80                  # clips per step (all processes, labeled + unlabeled) that lr is meant for
    momentum: float = 0.9
    weight_decay: float = 1e-4
    clip_grad: float = 40.0             # max gradient norm
    warmup_epochs: int = 60             # the learning rate rises linearly over these epochs, from warmup_start x lr
    warmup_start: float = 0.1           # ... to 1 x lr, under a cosine from lr to 0 over all epochs
    # method
    supervised_epochs: int = 60         # epochs of supervised loss only before the unlabeled losses start
    threshold: float = 0.3              # ltg: confidence to keep a pseudo-label (averaged RGB + TG)
    pseudo_rgb_share: float = 0.5       # ltg: the RGB logits' weight in that average, TG's is 1 - it; 0.5 is the
                                        # paper's plain mean, 0 pseudo-labels from TG alone, 1 from RGB alone
    fixmatch_threshold: float = 0.3     # fixmatch: confidence to keep a pseudo-label (RGB); the reference's FixMatch
                                        # baseline keeps LTG's 0.3, not the FixMatch paper's 0.95
    temperature: float = 0.5            # ltg: InfoNCE temperature
    weight_sup: float = 0.5             # each modality's supervised cross-entropy
    weight_unsup: float = 0.5           # each modality's pseudo-label cross-entropy
    weight_align: float = 1.0           # dense feature alignment, summed over the four stages
    weight_contrast: float = 0.5        # cross-modal InfoNCE
    warmup_strong: bool = True          # fixmatch, ltg: forward the strong views during the supervised warm-up too
                                        # (no loss uses them; BN's batch statistics include them), as the reference
    strong_ops: int = 2                 # RandAugment ops per clip
    strong_magnitude: float = 0.9       # RandAugment magnitude, 0..1
    # batch-norm statistics and evaluation
    precise_bn_batches: int = 120       # batches of clean training-pool clips to recompute BN statistics on; 0: never
    precise_bn_every: int = 5           # epochs between those recomputations (always before a validation)
    eval_every: int = 5                 # epochs between validations (1 clip, centre crop at size)
    test_views: str = "full"            # `tgtrain eval` / predict: full load_size squares, or center crops at size
    test_clips: int = 10                # `tgtrain eval`: clips per video
    test_crops: int = 3                 # `tgtrain eval`: squares per clip along the long side (1 or 3)


# What every preset sets explicitly, so that switching dataset never keeps another dataset's schedule.
RECIPE = ("epochs", "warmup_epochs", "warmup_start", "supervised_epochs", "threshold", "fixmatch_threshold",
          "warmup_strong", "batch_size", "lr", "lr_clips", "weight_decay", "clip_grad", "precise_bn_batches",
          "precise_bn_every", "eval_every", "test_views")

# The dataset presets are the reference configs of the paper's code (R3D-18 from scratch, 8 GPUs, SyncBN):
# configs/compare_hmdb51/*360e*40percent*, configs/ucf101_main/*180e*, configs/k400-fixmatch-tg-alignment-
# videos-ptv-simclr/8gpu/*90e*10percent*. The README's table puts each value beside the reference's name for it.
_R3D18 = dict(threshold=0.3, fixmatch_threshold=0.3, warmup_strong=True, lr=0.2, weight_decay=1e-4, clip_grad=40.0,
              warmup_start=0.1, precise_bn_every=5, eval_every=5, test_views="full")
PRESETS = {
    "hmdb51": dict(_R3D18, epochs=360, warmup_epochs=60, supervised_epochs=60, batch_size=5, lr_clips=80,
                   precise_bn_batches=120),
    "ucf101": dict(_R3D18, epochs=180, warmup_epochs=30, supervised_epochs=30, batch_size=5, lr_clips=80,
                   precise_bn_batches=200),
    "kinetics400": dict(_R3D18, epochs=90, warmup_epochs=15, supervised_epochs=15, batch_size=8, lr_clips=128,
                        precise_bn_batches=200),
    # Small enough to train on two CPU cores in minutes, and tuned on the synthetic motion set (6 classes, 80x60,
    # `tgprep synth`'s defaults): clips of 8 frames 2 apart, so that a clip sees continuous motion; a 40 px crop
    # of at least 0.8 of the frame, which keeps the object; no dropout (it halved the supervised network's
    # progress in this budget); 8 supervised epochs so that the TG network is right before its pseudo-labels
    # count, and a 0.5 threshold: the paper's 0.3 is for 51 or 101 classes; on 10 it kept confident wrong labels
    # from the start and both networks collapsed. Test views are centre crops at the training size: on this
    # network the paper's full squares (a change of scale) took an earlier demo's 20.9 % top-1 to chance.
    # Width 32, not 16: at 16 LTG's dense alignment (all four stages pulled towards TG) cost the RGB network more
    # than it taught at 40 % labels (72.9 % against supervised 76.4 over 3 seeds; 89.6 % on seed 0 without the
    # alignment); at 32 it has room for both (BENCHMARKS.md). On 3 synthetic sets it was never tuned on, at 40 %
    # labels, alignment weight 0.25 rather than 1 took LTG from 81.2 to 86.5 % (ahead on each set). The strong
    # views are kept out of the 8 supervised epochs: forwarding them was worth -19.4 points to LTG and -17.4 to
    # FixMatch there, since in a warm-up a third of the run long, BN's statistics then mix RandAugment's clips
    # into networks that never train on them (the reference forwards them in 60 of 360 epochs). No loader
    # processes: on the two cores it is sized for a worker takes a core from the step, and 80x60 clips decode
    # in line for little. FixMatch keeps the reference baseline's 0.3: over those sets at 10 % and 40 % it was the
    # stronger of 0.3 and the FixMatch paper's 0.95 (63.5 against 62.2 % on the mean of both; BENCHMARKS.md).
    "tiny": dict(width=32, blocks=(1, 1, 1, 1), proj_dim=64, size=40, load_size=48, crop_area=0.8, frame_interval=2,
                 dropout=0.0, epochs=24, warmup_epochs=1, warmup_start=0.0, supervised_epochs=8, threshold=0.5,
                 fixmatch_threshold=0.3, warmup_strong=False, weight_align=0.25,
                 batch_size=16, lr=0.2, lr_clips=80, weight_decay=1e-4, clip_grad=40.0, precise_bn_batches=4,
                 precise_bn_every=1, eval_every=1, test_views="center", workers=0, sync_bn=False),
}
ALIASES = {"r3d18": "hmdb51"}  # the earlier name of the HMDB-51 recipe, kept so that old commands still work

# Inclusive ranges of the numbers; the names in POSITIVE must also be > 0. Bounds are generous for research, but
# keep a stranger's config (a checkpoint's, say) from asking for absurd allocations.
RANGES = {
    "seed": (0, 2**32 - 1), "workers": (0, 256), "width": (1, 1024), "dropout": (0, 0.99), "proj_dim": (1, 8192),
    "clip_len": (2, 64), "frame_interval": (1, 64), "size": (8, 512), "load_size": (8, 512), "crop_area": (0, 1),
    "epochs": (1, 100_000), "batch_size": (1, 4096), "lr": (0, 100), "lr_clips": (1, 1_000_000),
    "momentum": (0, 0.999), "weight_decay": (0, 1), "clip_grad": (0, 1e9), "warmup_start": (0, 1),
    "threshold": (0, 1), "pseudo_rgb_share": (0, 1), "fixmatch_threshold": (0, 1), "temperature": (0, 100),
    "weight_sup": (0, 1000), "weight_unsup": (0, 1000), "weight_align": (0, 1000), "weight_contrast": (0, 1000),
    "strong_ops": (0, len(OPS)), "strong_magnitude": (0, 1), "precise_bn_batches": (0, 100_000),
    "precise_bn_every": (1, 100_000), "eval_every": (1, 100_000), "test_clips": (1, 100), "test_crops": (1, 3),
    "warmup_epochs": (0, 100_000), "supervised_epochs": (0, 100_000),
}
POSITIVE = {"crop_area", "lr", "clip_grad", "threshold", "fixmatch_threshold", "temperature"}
CHOICES = {"method": METHODS, "device": DEVICES, "test_views": VIEWS, "test_crops": (1, 3), "compile": COMPILE_MODES,
           "preset": (*PRESETS, *ALIASES)}
MAX_PARAMETERS = 10**9  # about 30x R3D-18's 33 million: a config asking for more is a mistake or an attack


def make_config(preset: str | None = None, file: str | None = None, settings=(), **flags) -> TrainConfig:
    """Defaults, the preset, a TOML file, `key=value` settings, then flags (None means "not given"). Without a
    preset, the file's `preset` names it, else hmdb51."""
    return resolve_config(preset, file, settings, **flags)[0]


def resolve_config(preset: str | None = None, file: str | None = None, settings=(),
                   **flags) -> tuple[TrainConfig, str | None]:
    """make_config's config, and the note that says which schedule it scaled to the epochs given (or None)."""
    values = read_toml(Path(file)) if file else {}
    config = preset_config(preset or values.get("preset") or "hmdb51", values, f"{file}: " if file else "")
    given = dict(parse_setting(s) for s in settings)
    given.update({k: typed(k, v, f"--{k.replace('_', '-')}") for k, v in flags.items() if v is not None})
    config, note = scale_schedule(replace(config, **given), explicit=set(values) | set(given))
    check(config)
    return config, note


SCHEDULE = {"warmup_epochs": "warm-up", "supervised_epochs": "supervised"}  # what follows epochs unless set


def scale_schedule(config: TrainConfig, explicit: set[str]) -> tuple[TrainConfig, str | None]:
    """With epochs set and the warm-up or supervised epochs not, those become the preset's share of the epochs
    given, rounded, at most epochs; and a note says so, e.g. "epochs 2: warm-up 0, supervised 1 (the tiny
    preset's 1/24 and 8/24 of its 24)". A user who shortens a run wants its schedule shortened with it."""
    recipe = PRESETS[config.preset]
    scaled = [key for key in SCHEDULE if key not in explicit]
    if "epochs" not in explicit or not scaled or config.epochs == recipe["epochs"]:
        return config, None
    values = {key: min(config.epochs, math.floor(recipe[key] * config.epochs / recipe["epochs"] + 0.5))
              for key in scaled}
    used = ", ".join(f"{SCHEDULE[key]} {value}" for key, value in values.items())
    shares = " and ".join(f"{recipe[key]}/{recipe['epochs']}" for key in scaled)
    return replace(config, **values), (f"epochs {config.epochs}: {used} (the {config.preset} preset's {shares} "
                                       f"of its {recipe['epochs']})")


def stored_config(values, where: str) -> TrainConfig:
    """A config stored as a mapping (a checkpoint's): typed and checked as a file's; fields it lacks (it may
    predate them) come from its own preset."""
    values = config_values(values, where)
    config = preset_config(values.get("preset", "hmdb51"), values, where)
    check(config, where)
    return config


def preset_config(preset: str, values: dict, where: str) -> TrainConfig:
    """The preset's settings (an alias resolved) with the typed field values over them."""
    if preset not in CHOICES["preset"]:
        raise UserError(f"{where}preset {str(preset)[:40]!r}: unknown; choose one of {', '.join(PRESETS)}")
    preset = ALIASES.get(preset, preset)
    return replace(TrainConfig(), **{**PRESETS[preset], **values, "preset": preset})


MAX_FILE = 1 << 20  # bytes; a whole config is about 1 KB


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_FILE + 1)
        if len(text) > MAX_FILE:
            raise ValueError(f"more than {MAX_FILE} bytes: not a config")
        values = tomllib.loads(text.decode())
    except (OSError, ValueError, RecursionError) as e:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{path}: cannot read the config ({str(e)[:200]}); `tgtrain config` prints one to start "
                        "from") from None
    return config_values(values, f"{path}: ")


def config_values(values, where: str) -> dict:
    """A mapping of TrainConfig fields (a TOML file's, a checkpoint's), each checked against its field's type."""
    if not isinstance(values, dict):
        raise UserError(f"{where}the config is not a table of settings")
    unknown = sorted(str(k) for k in set(values) - set(FIELD_TYPES))
    if unknown:
        raise UserError(f"{where}unknown settings {', '.join(unknown)[:200]}; `tgtrain config` lists the known ones")
    return {k: typed(k, v, f"{where}{k}") for k, v in values.items()}


def parse_setting(text: str) -> tuple[str, object]:
    """`key=value` from the command line: the value written as in TOML (quotes optional for text, brackets
    optional for a list), typed from the field."""
    key, sep, raw = text.partition("=")
    key, raw, where = key.strip(), raw.strip(), f"--set {text[:80]}"
    if not sep:
        raise UserError(f"{where}: write a setting as key=value, such as --set epochs=180")
    if key not in FIELD_TYPES:
        raise UserError(f"{where}: unknown setting {key!r}; `tgtrain config` lists them all")
    kind = FIELD_TYPES[key]
    if kind is str and not raw.startswith('"'):
        return key, raw
    if typing.get_origin(kind) is tuple and not raw.startswith("["):
        raw = f"[{raw}]"
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except (tomllib.TOMLDecodeError, RecursionError):
        raise UserError(f"{where}: {raw!r} is not {describe(kind)}") from None
    return key, typed(key, value, where)


def typed(key: str, value, where: str):
    """value as the field's type (an int is a fine float; a list of ints a fine tuple), or a one-line UserError."""
    kind = FIELD_TYPES[key]
    if kind is float and type(value) in (int, float):
        return float(value)
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
        return tuple(value)
    if type(value) is kind:
        return value
    raise UserError(f"{where}: {str(value)[:60]!r} is not {describe(kind)}")


def describe(kind) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(
        kind, "a list of whole numbers such as [2, 2, 2, 2]")


def check(config: TrainConfig, where: str = "") -> None:
    """Every value within its range and the settings consistent with each other; one line naming the first that
    is not. `where` starts the line (a file or checkpoint); command-line values name themselves."""
    def bad(problem: str):
        raise UserError(f"{where}{problem}")

    for key, choices in CHOICES.items():
        if getattr(config, key) not in choices:
            bad(f"{key} {getattr(config, key)!r}: unknown; choose one of {', '.join(map(str, choices))}")
    for key, (low, high) in RANGES.items():
        value = getattr(config, key)
        if not (math.isfinite(value) and low <= value <= high) or (key in POSITIVE and value <= 0):
            bad(f"{key} {value}: must be {'above' if key in POSITIVE else 'at least'} {low} and at most {high}")
    if len(config.blocks) != 4 or not all(1 <= n <= 100 for n in config.blocks):
        bad(f"blocks {list(config.blocks)[:8]}: give 4 numbers of residual blocks, one per stage, each 1 to 100")
    if (parameters := backbone_parameters(config.width, config.blocks)) > MAX_PARAMETERS:
        bad(f"width {config.width} with blocks {list(config.blocks)}: about {parameters:.2g} parameters per network, "
            f"above the {MAX_PARAMETERS:.0e} allowed (R3D-18, width 64 and blocks [2, 2, 2, 2], has 33 million)")
    if config.size > config.load_size:
        bad(f"size {config.size} is larger than load_size {config.load_size}; crops come from the loaded square")
    for key in SCHEDULE:
        if getattr(config, key) > config.epochs:
            bad(f"{key} {getattr(config, key)} is more than epochs {config.epochs}; lower it (--set {key}=N), "
                "or leave it out and it scales with epochs")


def backbone_parameters(width: int, blocks) -> int:
    """About how many weights a 3D ResNet of this width and depth holds: two 3x3x3 convolutions per block."""
    return sum(n * 2 * 27 * (width * 2**i) ** 2 for i, n in enumerate(blocks))


def to_toml(config: TrainConfig) -> str:
    """The config as TOML, readable back with --config."""
    lines = []
    for key, value in asdict(config).items():
        if key == "data" and not value:  # not a setting yet: `tgtrain run --data` gives it
            lines.append('# data = "shards/NAME"   a `tgprep build` output folder; or give --data')
            continue
        if isinstance(value, str):
            value = json.dumps(value, ensure_ascii=False)  # JSON's string escapes are TOML's
        elif isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (tuple, list)):
            value = "[" + ", ".join(str(v) for v in value) + "]"
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}
