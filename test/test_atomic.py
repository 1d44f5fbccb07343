"""Atomic writes leave either the old or the new file, never a partial one."""

import json

import pytest

from structvpr_core.atomic import atomic_write, atomic_write_json


def test_replaces_content(tmp_path):
    p = tmp_path / "sub" / "m.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["m.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "m.bin"
    p.write_bytes(b"old")

    def crash(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        atomic_write(p, crash)
    assert p.read_bytes() == b"old"
    assert [f.name for f in tmp_path.iterdir()] == ["m.bin"]
