"""The schema of a training job (``config/train_*.yaml``), validated on load.

Unknown keys and bad values raise a one-line ``ConfigError`` naming the key path (via
``structvpr_core.config.from_dict``). ``to_dict`` gives the plain form stored in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import from_dict, load_yaml
from ..errors import ConfigError
from ..partition import PartitionConfig
from ..slme import SLMEConfig, label_retrieval_weights

PLACE_STAGES = ("stage1_seg", "stage1_rgb", "partition", "stage2")  # StructVPR: need place labels (data.root)
STAGES = (*PLACE_STAGES, "lqq")  # lqq: the low-quality-query student, from any images (the lqq section)


@dataclass
class SyntheticConfig:
    """Generate a synthetic set at ``data.root`` when it is absent (the path must say 'synthetic')."""

    places: int = 40
    seed: int = 0
    size: list[int] = field(default_factory=lambda: [320, 240])  # W, H of the generated images
    db_views: int = 2
    query_views: int = 2
    # Opt-in (``data.synthetic`` docstring): place counts [train, val, test] instead of 60/20/20;
    # k shared colour palettes (look-alike places, hard negatives); the probability that a query
    # view is repainted (an appearance change the label maps do not see).
    splits: list[int] | None = None
    lookalike: int = 0
    repaint: float = 0.0

    def validate(self) -> None:
        if self.places < 3 or self.db_views < 1 or self.query_views < 1:
            raise ConfigError("places must be >= 3 (train, val and test places), views >= 1")
        if self.splits is not None and (
            len(self.splits) != 3 or min(self.splits) < 1 or sum(self.splits) != self.places
        ):
            raise ConfigError(f"splits: 3 place counts >= 1 summing to places ({self.places}), got {self.splits}")
        if self.lookalike < 0 or not 0.0 <= self.repaint <= 1.0:
            raise ConfigError(f"lookalike must be >= 0, repaint in [0, 1]; got {self.lookalike}, {self.repaint}")


@dataclass
class DataConfig:
    root: Path = Path("data")
    format: str = "auto"
    labels: Path | None = None  # label-map root mirroring ``root``; None: <root>/labelmaps
    train_split: str = "train"
    val_split: str = "val"
    image_size: list[int] = field(default_factory=lambda: [640, 480])  # W, H
    workers: int = 0  # DataLoader worker processes per rank
    synthetic: SyntheticConfig | None = None

    def validate(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 32:
            raise ConfigError(f"image_size: expected [W, H] with both >= 32, got {self.image_size}")
        if self.workers < 0:
            raise ConfigError(f"workers: must be >= 0, got {self.workers}")
        if self.synthetic is not None and "synthetic" not in str(self.root).lower():
            raise ConfigError(f"root: a generated set must live under a path containing 'synthetic', got {self.root}")

    @property
    def label_root(self) -> Path:
        return self.labels if self.labels is not None else self.root / "labelmaps"


@dataclass
class MiningConfig:
    # "radius": positives = database images within positive_m (needs coordinates; NetVLAD's weak
    # supervision); "ground_truth": the dataset's own positives loaded at positive_m (e.g. MSLS);
    # "auto": radius when the dataset has coordinates, else ground truth.
    positives: str = "auto"
    positive_m: float = 10.0
    negative_m: float = 25.0  # negatives lie beyond this (metres, or frames for sequences)
    negatives_per_query: int = 1  # K hard negatives per (q, p): K triplets sharing q and p
    cache_queries: int = 1000  # queries per cache refresh: mining runs again after this many
    negative_pool: int = 1000  # random database images searched for hard negatives per refresh
    embed_batch_size: int = 16
    # Positives must also face the query's way: wrapped compass-angle difference <= this (degrees),
    # applied when the dataset has headings (MSLS); pairs with an unknown heading are kept. None: no filter.
    max_view_angle_deg: float | None = None

    def validate(self) -> None:
        if self.positives not in ("auto", "radius", "ground_truth"):
            raise ConfigError(f"positives: expected auto, radius or ground_truth, got {self.positives!r}")
        if not 0 < self.positive_m <= self.negative_m:
            raise ConfigError(f"positive_m: must be > 0 and <= negative_m ({self.negative_m}), got {self.positive_m}")
        for name in ("negatives_per_query", "cache_queries", "negative_pool", "embed_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_view_angle_deg is not None and not 0 < self.max_view_angle_deg <= 180:
            raise ConfigError(f"max_view_angle_deg: must be in (0, 180] degrees or null, got {self.max_view_angle_deg}")


@dataclass
class StageConfig:
    epochs: int = 10
    batch_size: int = 4  # triplets per optimiser step, summed over all DDP ranks
    queries_per_epoch: int = 0  # 0: every training query with a positive, each epoch
    optimizer: str = "adam"
    lr: float = 1e-5
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    margin: float = 0.1
    freeze_bn: bool = False  # BatchNorm in eval mode (running statistics fixed)
    amp: bool = True  # mixed precision; only ever used on CUDA
    validate_every: int = 1  # epochs between validations (the last epoch always validates)
    # validate the starting model first: log.csv row epoch 0, and best.pt until a trained epoch beats it
    validate_start: bool = False
    val_queries: int = 0  # 0: all validation queries
    projector_lr: float | None = None  # learning rate of the distillation's modules, e.g. T (None: lr)
    # learning rate of a branch's randomly initialised head on a pretrained backbone (the StructVPR++
    # label head; the branch's ``head_parameters``) (None: lr); plain StructVPR branches have none
    head_lr: float | None = None

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "validate_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("queries_per_epoch", "val_queries", "margin", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer: expected adam or sgd, got {self.optimizer!r}")
        for name in ("lr", "projector_lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}: must be > 0, got {value}")


@dataclass
class LabelFeaturesConfig:
    """StructVPR++ label-aware descriptors (our design where the paper text is unavailable).

    Present and ``enabled``: stage I trains the ++ teacher and student (triplet on their full
    descriptors), the partition ranks with them, stage II distils with ``distill_structvpr_pp``.
    Absent or ``enabled: false``: plain StructVPR, unchanged.
    """

    enabled: bool = True
    dim: int = 64  # d_l, the size of each label feature
    weight: float = 1.0  # λ, the label part's weight in the descriptor
    beta: float = 1.0  # β, per-label KD weight (stage II)
    gamma: float = 0.1  # γ, weight of the CE of the student's masks against the SLME cluster map (stage II)
    clusters: int = 6  # C label clusters: 6 (the SLME default) or 3
    presence_weighting: bool = True  # scale each label part by its normalised presence p̂_c (off: 1/√C)
    ce: bool = True  # the CE term on/off (ablation)
    retrieval_weights: list[float] | None = None  # w_c; None: the SLME prior scaled to [0, 1], dynamic 0
    present_min: float = 0.01  # a label is "present" in an image when it covers at least this fraction
    eps: float = 1e-6  # ε of the label pooling Σ A_c·P(G) / (Σ A_c + ε)

    def validate(self) -> None:
        if self.clusters not in (3, 6):
            raise ConfigError(f"clusters: expected 3 or 6, got {self.clusters!r}")
        if self.dim < 1:
            raise ConfigError(f"dim: must be >= 1, got {self.dim}")
        for name in ("weight", "beta", "gamma"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not self.eps > 0:
            raise ConfigError(f"eps: must be > 0, got {self.eps}")
        if not 0 <= self.present_min < 1:
            raise ConfigError(f"present_min: must be in [0, 1), got {self.present_min}")
        w = self.retrieval_weights
        if w is not None and (len(w) != self.clusters or any(not v >= 0 for v in w)):
            raise ConfigError(f"retrieval_weights: expected {self.clusters} values >= 0, got {w}")

    def model_args(self) -> dict:
        """The label arguments of the ++ branches (``models.build_pp_student`` / ``build_pp_teacher``)."""
        weights = self.retrieval_weights if self.retrieval_weights is not None else None
        return {
            "clusters": self.clusters,
            "label_dim": self.dim,
            "weights": list(weights) if weights is not None else label_retrieval_weights(self.clusters),
            "lam": self.weight,
            "presence_weighting": self.presence_weighting,
            "eps": self.eps,
        }


@dataclass
class ModelConfig:
    label_features: LabelFeaturesConfig | None = None  # None: StructVPR; set: StructVPR++

    @property
    def plus_plus(self) -> LabelFeaturesConfig | None:
        """The label-feature config when StructVPR++ is on, else None."""
        lf = self.label_features
        return lf if lf is not None and lf.enabled else None


@dataclass
class BagImages:
    """The images of one rosbag2 topic (sensor_msgs Image or CompressedImage) as training data."""

    path: Path
    topic: str
    every: int = 1  # keep every N-th frame

    def validate(self) -> None:
        if self.every < 1:
            raise ConfigError(f"every: must be >= 1, got {self.every}")


LQQ_DEGRADATIONS = ["size=160x120,jpeg=30", "jpeg=10", "size=80x60,jpeg=50", "none"]


@dataclass
class LQQConfig:
    """The ``lqq`` stage: a low-quality-query student distilled from a frozen teacher (VPR4LQQ).

    The student, a copy of the teacher's RGB branch, sees a degraded copy of each image and learns
    the teacher's descriptor (and inter-channel correlations) of the good one. No place labels:
    the images are any folders and rosbag2 image topics. The input size is ``data.image_size``.
    """

    teacher: str = "imagenet"  # imagenet | stage2 (this run's RUN/stage2[-TAG]/best.pt) | PATH to an RGB checkpoint
    folders: list[Path] = field(default_factory=list)  # image folders (training data, no labels)
    recursive: bool = False  # also images in sub-folders
    bags: list[BagImages] = field(default_factory=list)  # rosbag2 image topics (frames extracted once, as PNG)
    # degrade.py specs; one is drawn per image and epoch (deterministic under the seed)
    degradations: list[str] = field(default_factory=lambda: list(LQQ_DEGRADATIONS))
    val_fraction: float = 0.2  # images held out for validation (0: none; best.pt is then the last epoch)
    val_block: int = 10  # held out in runs of this many consecutive images (neighbouring frames look alike)
    first_trained_stage: int = 3  # stages F1..F(n-1) frozen (stem, early stages); Fn..F5 trained
    ickd_stages: list[int] = field(default_factory=lambda: [3, 4, 5])  # 1-based stages of the ICKD term, averaged
    w_mse: float = 1.0  # weight of mean_batch ‖v_S − v_T‖² on the global descriptors
    w_ickd: float = 0.01  # weight of the ICKD term (chosen by validation on Corridor, see config/lqq_corridor.yaml)
    w_triplet: float = 0.0  # a triplet term needs image positions, which folders and bags do not give here
    epochs: int = 10
    batch_size: int = 8  # images per optimiser step, summed over all DDP ranks
    images_per_epoch: int = 0  # 0: every training image, each epoch
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    amp: bool = True  # mixed precision; only ever used on CUDA

    def validate(self) -> None:
        from ..degrade import parse_degradation_set

        if not self.folders and not self.bags:
            raise ConfigError("give at least one image source: folders or bags")
        parse_degradation_set(self.degradations)
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        for name in ("val_block", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.first_trained_stage <= 5:
            raise ConfigError(f"first_trained_stage: must be in 1..5, got {self.first_trained_stage}")
        if len(set(self.ickd_stages)) != len(self.ickd_stages) or not set(self.ickd_stages) <= {1, 2, 3, 4, 5}:
            raise ConfigError(f"ickd_stages: distinct stage numbers in 1..5, got {self.ickd_stages}")
        frozen = [s for s in self.ickd_stages if s < self.first_trained_stage]
        if frozen and self.w_ickd > 0:
            raise ConfigError(
                f"ickd_stages: stage {frozen[0]} is frozen (first_trained_stage {self.first_trained_stage}), "
                "so its ICKD term cannot change"
            )
        for name in ("w_mse", "w_ickd", "images_per_epoch", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.w_mse + self.w_ickd <= 0:
            raise ConfigError("w_mse and w_ickd: at least one must be > 0")
        if self.w_triplet != 0:
            raise ConfigError(
                "w_triplet: a triplet term needs image positions; the folder and bag sources give none here, "
                "so it must be 0 (VPR4LQQ's best setting has no triplet term either)"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer: expected adam or sgd, got {self.optimizer!r}")
        if not self.lr > 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        if not self.teacher.strip():
            raise ConfigError("teacher: expected imagenet, stage2 or a checkpoint path")

    def stage_config(self) -> StageConfig:
        """The epoch loop's settings for this stage (BatchNorm always in eval mode, validation every epoch)."""
        return StageConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            margin=0.0,
            freeze_bn=True,
            amp=self.amp,
            validate_every=1,
        )


@dataclass
class TrainConfig:
    seed: int = 0
    stages: list[str] = field(default_factory=lambda: list(PLACE_STAGES))  # run by default (--stages overrides)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    slme: SLMEConfig = field(default_factory=SLMEConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    stage1_seg: StageConfig = field(default_factory=StageConfig)
    stage1_rgb: StageConfig = field(default_factory=StageConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    lqq: LQQConfig | None = None  # the low-quality-query student (stage "lqq")
    recall_ns: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    tensorboard: bool = False  # also write TensorBoard event files (needs the tensorboard package)
    progress: bool = True

    def validate(self) -> None:
        if not self.recall_ns or min(self.recall_ns) < 1 or 1 not in self.recall_ns:
            raise ConfigError(f"recall_ns: positive integers including 1, got {self.recall_ns}")
        check_stages(self.stages, self, "stages")


def check_stages(stages: list[str], cfg: TrainConfig, where: str) -> None:
    """Known stage names, and an ``lqq`` section when the ``lqq`` stage is asked for."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"{where}: unknown stage {unknown[0]!r} (known: {', '.join(STAGES)})")
    if not stages:
        raise ConfigError(f"{where}: no stage given (known: {', '.join(STAGES)})")
    if "lqq" in stages and cfg.lqq is None:
        raise ConfigError(f"{where}: stage lqq needs an lqq section in the config (teacher, folders or bags, ...)")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a training YAML; ``overrides`` are ``key.path=value`` strings (YAML values) applied first."""
    import yaml

    path = Path(path)
    if not overrides:
        return load_yaml(path, TrainConfig)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got a {type(data).__name__}")
    for item in overrides:
        apply_override(data, item)
    return from_dict(TrainConfig, data, where=path.name)


def apply_override(data: dict, item: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) inside the nested mapping ``data``."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: value is not valid YAML") from None
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value
