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
from ..slme import SLMEConfig

STAGES = ("stage1_seg", "stage1_rgb", "partition", "stage2")


@dataclass
class SyntheticConfig:
    """Generate a synthetic set at ``data.root`` when it is absent (the path must say 'synthetic')."""

    places: int = 40
    seed: int = 0
    size: list[int] = field(default_factory=lambda: [320, 240])  # W, H of the generated images
    db_views: int = 2
    query_views: int = 2

    def validate(self) -> None:
        if self.places < 3 or self.db_views < 1 or self.query_views < 1:
            raise ConfigError("places must be >= 3 (train, val and test places), views >= 1")


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
    val_queries: int = 0  # 0: all validation queries
    projector_lr: float | None = None  # learning rate of the distillation's modules, e.g. T (None: lr)

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "validate_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("queries_per_epoch", "val_queries", "margin", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"optimizer: expected adam or sgd, got {self.optimizer!r}")
        for name in ("lr", "projector_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}: must be > 0, got {value}")


@dataclass
class TrainConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    slme: SLMEConfig = field(default_factory=SLMEConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    stage1_seg: StageConfig = field(default_factory=StageConfig)
    stage1_rgb: StageConfig = field(default_factory=StageConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    stage2: StageConfig = field(default_factory=StageConfig)
    recall_ns: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    tensorboard: bool = False  # also write TensorBoard event files (needs the tensorboard package)
    progress: bool = True

    def validate(self) -> None:
        if not self.recall_ns or min(self.recall_ns) < 1 or 1 not in self.recall_ns:
            raise ConfigError(f"recall_ns: positive integers including 1, got {self.recall_ns}")


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
