"""The typed config loader: unknown keys, wrong types and range checks are one-line errors."""

from dataclasses import dataclass, field
from typing import Literal

import pytest

from structvpr_core.config import from_dict, load_yaml, to_dict
from structvpr_core.errors import ConfigError


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 3

    def validate(self):
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")


@dataclass
class Outer:
    name: str
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, int] = (640, 480)
    weights: list[float] | None = None
    inner: Inner = field(default_factory=Inner)


def test_fills_nested_and_converts_types():
    cfg = from_dict(Outer, {"name": "x", "sizes": [320, 240], "weights": [1, 2.5], "inner": {"lr": 1}})
    assert cfg.sizes == (320, 240)
    assert cfg.weights == [1.0, 2.5]
    assert isinstance(cfg.inner.lr, float) and cfg.inner.lr == 1.0
    assert to_dict(cfg)["inner"] == {"lr": 1.0, "steps": 3}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "colour": 1}, "unknown key 'colour'"),
        ({"name": "x", "inner": {"lrr": 1}}, "cfg.inner: unknown key 'lrr'"),
        ({"name": "x", "mode": "c"}, "cfg.mode: expected one of ['a', 'b']"),
        ({"name": "x", "inner": {"steps": "3"}}, "cfg.inner.steps: expected an integer"),
        ({"name": "x", "inner": {"steps": True}}, "cfg.inner.steps: expected an integer"),
        ({"name": "x", "sizes": [1]}, "cfg.sizes: expected 2 values"),
        ({"name": "x", "inner": {"lr": -1}}, "cfg.inner: lr: must be > 0"),
        ({}, "missing required key 'name'"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_rejects_bad_configs(data, message):
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, data, where="cfg")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_load_yaml_names_file(tmp_path):
    p = tmp_path / "job.yaml"
    p.write_text("name: x\ninner: {lr: 0.5}\n")
    assert load_yaml(p, Outer).inner.lr == 0.5
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"job.yaml: invalid YAML"):
        load_yaml(p, Outer)
    p.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match=r"job.yaml"):
        load_yaml(p, Outer)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_yaml(tmp_path / "missing.yaml", Outer)
