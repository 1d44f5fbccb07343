"""A user's clone is all there is: nothing tracked may reach for a sibling folder (issue 18)."""

from __future__ import annotations

import subprocess

import pytest

from structvpr_core.paths import corridor_root

# Written split so that this file does not match itself.
SIBLING_PATTERNS = (
    "../" + "shared",
    "/" + "shared/data",
    '"' + 'shared" / "data"',
    "shared/" + "notes",
    "shared/" + "DESIGN",
)


def tracked_text_files(repo_root):
    try:
        out = subprocess.run(["git", "ls-files"], cwd=repo_root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (an installed copy): nothing to check")
    for name in out.splitlines():
        path = repo_root / name
        if path.is_file() and path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".npy", ".pt", ".onnx"):
            yield name, path.read_text(encoding="utf-8", errors="replace")


def test_no_tracked_file_names_a_sibling_folder(repo_root):
    offenders = [
        f"{name}:{i}"
        for name, text in tracked_text_files(repo_root)
        for i, line in enumerate(text.splitlines(), start=1)
        if any(p in line for p in SIBLING_PATTERNS)
    ]
    assert not offenders, f"paths outside the repository: {offenders}"


def test_sample_route_lives_in_the_repository(repo_root, monkeypatch):
    monkeypatch.delenv("STRUCTVPR_CORRIDOR", raising=False)
    root = corridor_root()
    assert root.resolve().is_relative_to(repo_root.resolve())
    assert (root / "ground_truth.csv").is_file()
    assert len(list((root / "ref").glob("*.jpg"))) == 111 and len(list((root / "query").glob("*.jpg"))) == 111
