"""BuildConfig: every setting of `tgprep build`, stored in dataset.json and checked on resume."""

from dataclasses import asdict, dataclass

# How a build runs, not what it writes: never stored, never compared.
RUNTIME_FIELDS = ("workers", "ray_address", "overwrite", "strict", "dry_run", "stage", "resume_check")
# Where things are: stored for the record, but a resumed build may name them differently
# (a relative path, a moved dataset); the plan digest in dataset.json catches other videos.
LOCATION_FIELDS = ("out", "root", "annotations")
# What ran the shard tasks: stored for the record; any executor writes the same bytes, so it may change.
ENGINE_FIELDS = ("executor",)


@dataclass
class BuildConfig:
    dataset: str                      # hmdb51 | ucf101 | kinetics400 | folder | synthetic
    root: str                         # folder holding the videos, nested in any way
    out: str = ""                     # output folder (shards, manifests, dataset.json)
    annotations: str | None = None    # folder of official split files; default: searched under root
    split: int = 1                    # official split 1, 2 or 3 (hmdb51, ucf101, synthetic)
    pool: str = "all-non-test"        # hmdb51/synthetic training pool: all-non-test (the paper's) or official
    ratio: float | None = None        # labeled fraction per class, 0 < ratio <= 1
    labeled_list: str | None = None   # exact labeled list instead of --ratio (MMAction2 or bare paths)
    seed: int = 0                     # seeds the labeled draw, the folder val split and shard shuffling
    val_fraction: float = 0.3         # folder: fraction of each class held out for val
    allow_missing: bool = False       # go on without listed videos that are not on disk
    fps: float | None = None          # keep this many frames per second; None keeps every frame
    short_side: int = 256             # resize so the short side is this (never upscaled); 0 keeps size
    quality: int = 90                 # JPEG quality of stored RGB and TG frames (see BENCHMARKS.md)
    store: str = "frames"             # frames: RGB + TG JPEGs (tgprep.sample) | video: H.264, TG at load (video_sample)
    keyframe_interval: int = 32       # video: frames per keyframe (BENCHMARKS.md: bytes against frames decoded per clip)
    videos_per_shard: int = 100       # videos per tar; ~100 HMDB-51 videos make a few hundred MB
    timeout: float = 300.0            # seconds one video may take to decode, and a worker may stay silent
    workers: int = 0                  # parallel processes; 0 = one per core
    executor: str = "local"           # local (this machine's cores) | ray (a Ray cluster)
    ray_address: str | None = None    # the Ray cluster to join; None: RAY_ADDRESS, a local one, or a new one
    stage: str | None = None          # a bucket's output: local folder its files are written in first; None: default
    resume_check: str = "sha256"      # how finished shards are checked on resume: sha256 (and size) | size
    overwrite: bool = False           # rebuild an output that holds a different or finished build
    strict: bool = False              # exit 1 when any video failed
    dry_run: bool = False             # stop after the manifests and the summary

    def settings(self) -> dict:
        """What dataset.json records of this build."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}

    def identity(self) -> dict:
        """The settings a resumed build must share with the one that started the output."""
        unused = ("keyframe_interval",) if self.store == "frames" else ()
        return {k: v for k, v in self.settings().items() if k not in LOCATION_FIELDS + ENGINE_FIELDS + unused}
