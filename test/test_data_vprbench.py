"""The VPR-Bench layout (ref/ query/ ground_truth.csv): the real Corridor set and malformed copies."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from structvpr_core.data import detect_format, load_dataset
from structvpr_core.errors import DatasetError


def write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    return path


def make_bench(root: Path, n_ref: int, n_query: int, gt_rows: list[str], names=None) -> Path:
    names = names or (lambda i: f"{i:07d}.jpg")
    for i in range(n_ref):
        write_image(root / "ref" / names(i))
    for i in range(n_query):
        write_image(root / "query" / names(i))
    (root / "ground_truth.csv").write_text("query_index,matching_ref_indices\n" + "\n".join(gt_rows) + "\n")
    return root


def test_corridor_reads_as_a_sequence_with_its_ground_truth(corridor):
    assert detect_format(corridor) == "vpr-bench"
    ds = load_dataset(corridor, format="vpr-bench")
    assert (ds.num_database, ds.num_queries, ds.kind) == (111, 111, "sequence")
    assert [p.name for p in ds.database[:3]] == ["0000000.jpg", "0000001.jpg", "0000002.jpg"]
    # SOURCE.md: query i matches reference frames i-2 .. i+2, clipped at the ends
    for i in range(111):
        assert ds.positives[i].tolist() == list(range(max(0, i - 2), min(110, i + 2) + 1))
    assert not ds.synthetic


def test_numeric_names_are_ordered_as_numbers_and_unlisted_queries_have_no_positive(tmp_path):
    root = make_bench(tmp_path / "b", 12, 3, ["0,10 11", "2,"], names=lambda i: f"{i}.png")
    ds = load_dataset(root)
    assert [p.stem for p in ds.database] == [str(i) for i in range(12)]  # 2 before 10
    assert [p.tolist() for p in ds.positives] == [[10, 11], [], []]


def test_the_pickled_npy_is_never_loaded(tmp_path):
    root = make_bench(tmp_path / "b", 2, 2, ["0,0"])
    (root / "ground_truth.csv").unlink()
    (root / "ground_truth_new.npy").write_bytes(b"\x93NUMPY not to be unpickled")
    with pytest.raises(DatasetError, match="pickle"):
        load_dataset(root, format="vpr-bench")


@pytest.mark.parametrize(
    "rows, match",
    [
        (["0,0 7"], "reference 7 names a missing image"),
        (["5,0"], "query 5 names a missing image"),
        (["0,one two"], "space-separated integers"),
        (["0,0", "0,1"], "listed twice"),
        (["0,0,1"], "3 fields"),
        ([], "no ground-truth rows"),
    ],
)
def test_malformed_ground_truth_names_the_file_and_line(tmp_path, rows, match):
    root = make_bench(tmp_path / "b", 3, 2, rows)
    with pytest.raises(DatasetError, match=match) as e:
        load_dataset(root, format="vpr-bench")
    assert str(root / "ground_truth.csv") in str(e.value) and "\n" not in str(e.value)


def test_missing_folders_are_named(tmp_path):
    root = make_bench(tmp_path / "b", 2, 2, ["0,0"])
    for p in (root / "ref").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"ref: no images"):
        load_dataset(root, format="vpr-bench")
    (root / "ref").rmdir()
    with pytest.raises(DatasetError, match=r"ref: missing folder"):
        load_dataset(root, format="vpr-bench")
