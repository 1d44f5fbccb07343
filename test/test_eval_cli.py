"""`structvpr eval` and `structvpr make-synthetic` end to end through the CLI's main()."""

import json

import numpy as np
import pytest

from structvpr_core.cli import main

SMALL = ["--size", "160", "120", "--device", "cpu", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def numpy_recall(db, q, positives, n):
    ranking = np.argsort(-(q @ db.T), axis=1)[:, :n]
    return np.mean([np.isin(ranking[i], positives[i]).any() for i in range(len(q))])


def test_corridor_through_vpr_bench_format(corridor, tmp_path, capsys):
    out_json, matches, cache = tmp_path / "corridor.json", tmp_path / "matches", tmp_path / "cache"
    argv = [
        "eval",
        "--dataset",
        str(corridor),
        "--format",
        "vpr-bench",
        "--recall",
        "1",
        "5",
        "10",
        "--json",
        str(out_json),
        "--save-matches",
        str(matches),
        "--cache-dir",
        str(cache),
        *SMALL,
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "R@1" in printed and "PR AUC" in printed and "SYNTHETIC" not in printed
    result = json.loads(out_json.read_text())
    assert (result["num_queries"], result["num_database"], result["descriptor_dim"]) == (111, 111, 448)
    assert result["synthetic"] is False and result["checkpoint"] is None and result["kind"] == "sequence"
    r = result["recall"]
    assert list(r) == ["1", "5", "10"] and 0.0 < r["1"] <= r["5"] <= r["10"] <= 1.0
    assert r["5"] > 0.3  # far above chance (5/111) even untrained
    pr = result["pr"]
    assert 0.0 < pr["auc"] <= 1.0 and 0.0 <= pr["recall_at_100_precision"] <= r["1"]
    assert pr["recall"][-1] == pytest.approx(r["1"])  # accepting every best match recalls R@1
    # The numbers agree with numpy on the cached descriptors, which are the model's real output.
    from structvpr_core.data import load_dataset
    from structvpr_core.evaluate import cache_key

    ds = load_dataset(corridor)
    assert len(list((cache / "descriptors").glob("*.npz"))) == 2  # the database's entry and the queries'
    db, q = (
        np.load(cache / "descriptors" / f"{cache_key(paths, result['fingerprint'])}.npz")["descriptors"]
        for paths in (ds.database, ds.queries)
    )
    positives = [np.arange(max(0, i - 2), min(110, i + 2) + 1) for i in range(111)]
    for n in (1, 5, 10):
        assert r[str(n)] == pytest.approx(numpy_recall(db, q, positives, n))
    files = sorted(matches.glob("*.jpg"))
    assert len(files) == 111 and sum("_ok_" in f.name for f in files) == round(r["1"] * 111)
    # second run: descriptors from the cache, same numbers
    assert main(argv[: -len(SMALL)] + SMALL) == 0
    again = json.loads(out_json.read_text())
    assert again["descriptors_cached"] is True and again["recall"] == r
    assert "from cache" in capsys.readouterr().out


def test_synthetic_set_from_the_cli_is_reported_as_synthetic(tmp_path, capsys):
    assert (
        main(
            [
                "make-synthetic",
                "--out",
                str(tmp_path / "streets"),
                "--places",
                "5",
                "--seed",
                "3",
                "--size",
                "128",
                "96",
                "--no-progress",
            ]
        )
        == 0
    )
    out = tmp_path / "streets-synthetic"
    assert f"wrote SYNTHETIC dataset {out}" in capsys.readouterr().out
    out_json = tmp_path / "syn.json"
    assert (
        main(
            [
                "eval",
                "--dataset",
                str(out),
                "--split",
                "train",
                "--json",
                str(out_json),
                "--cache-dir",
                str(tmp_path / "cache"),
                *SMALL,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed
    result = json.loads(out_json.read_text())
    assert result["synthetic"] is True and result["split"] == "train" and result["pr"] is None
    assert result["num_queries"] == 3 * 2 and result["num_database"] == 3 * 2


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--dataset", "{tmp}/nowhere"], "nowhere: no such dataset directory"),
        (["--dataset", "{tmp}/bench", "--format", "vpr-bench"], "ground_truth.csv: missing ground truth"),
        (["--dataset", "{corridor}", "--recall", "0"], "--recall: N must be >= 1"),
        (["--dataset", "{corridor}", "--checkpoint", "{tmp}/none.pt"], "none.pt"),
    ],
)
def test_bad_input_gives_a_one_line_error(tmp_path, corridor, capsys, argv, needle):
    (tmp_path / "bench" / "ref").mkdir(parents=True)
    (tmp_path / "bench" / "query").mkdir()
    for sub in ("ref", "query"):
        (tmp_path / "bench" / sub / "0.jpg").write_bytes((corridor / "ref" / "0000000.jpg").read_bytes())
    argv = [a.format(tmp=tmp_path, corridor=corridor) for a in argv]
    assert main(["eval", *argv, *SMALL]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("structvpr eval: error:") and needle in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_nordland_frame_tolerance_reaches_the_loader(corridor, tmp_path):
    root = tmp_path / "nordland"
    for season, src in (("summer", "ref"), ("winter", "query")):
        (root / season).mkdir(parents=True)
        for i in range(0, 30, 5):  # frames 0, 5, ..., 25 of the real route
            (root / season / f"{i:05d}.jpg").write_bytes((corridor / src / f"{i:07d}.jpg").read_bytes())
    out_json = tmp_path / "n.json"
    assert (
        main(
            [
                "eval",
                "--dataset",
                str(root),
                "--frame-tolerance",
                "5",
                "--json",
                str(out_json),
                "--cache-dir",
                str(tmp_path / "cache"),
                *SMALL,
            ]
        )
        == 0
    )
    result = json.loads(out_json.read_text())
    assert result["format"] == "nordland" and result["kind"] == "sequence" and result["pr"] is not None
    # tolerance 5 frames: the same frame and its neighbours 5 frames away (one at the ends)
    assert result["num_queries_with_positives"] == 6
    assert result["mean_positives_per_query"] == pytest.approx(16 / 6)
    assert (
        main(
            [
                "eval",
                "--dataset",
                str(root),
                "--frame-tolerance",
                "4",
                "--json",
                str(out_json),
                "--cache-dir",
                str(tmp_path / "cache"),
                *SMALL,
            ]
        )
        == 0
    )
    assert json.loads(out_json.read_text())["mean_positives_per_query"] == 1.0
