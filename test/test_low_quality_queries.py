"""Low-quality queries, the evaluation and deployment side: degraded queries, query encoders, the sweep.

Real data: the Corridor route (111 reference + 111 query frames, 160×120) with the ImageNet RGB
branch at 160×120. The "students" are the ImageNet branch with perturbed weights, saved as query
encoders (``make_student``): query encoders by declaration, for testing the acceptance rule.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from structvpr_core.cli import main
from structvpr_core.data import load_dataset
from structvpr_core.errors import ConfigError, MapError
from structvpr_core.evaluate import cache_key, evaluate
from structvpr_core.extractor import Extractor
from structvpr_core.fingerprint import accepts, refusal
from structvpr_core.weights import IMAGENET_SHA256, file_sha256

SIZE = (160, 120)
CLI_SIZE = ["--size", "160", "120", "--device", "cpu", "--no-progress"]
# Measured here (ImageNet RGB branch, 160×120, the real Corridor route): R@1 73.0 % undegraded,
# 18.0 % with every query JPEG-compressed at quality 5. The floor asks for a drop of 30 points.
JPEG5_MIN_DROP = 0.30

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher():
    """The ImageNet RGB branch at 160×120 (PyTorch: the same descriptors on every machine)."""
    return Extractor(None, device="cpu", image_size=SIZE, backend="torch")


@pytest.fixture(scope="module")
def student(make_student, teacher):
    return make_student(teacher.fingerprint, name="imagenet_student")


@pytest.fixture(scope="module")
def stranger(make_student, tmp_path_factory):
    """A query encoder declared for another teacher (a randomly initialised RGB branch, saved)."""
    import torch

    from structvpr_core.checkpoint import save_checkpoint
    from structvpr_core.models import RGB_ARCHITECTURE, build_rgb_branch

    torch.manual_seed(0)
    other = tmp_path_factory.mktemp("other") / "other_teacher.pt"
    save_checkpoint(
        other, build_rgb_branch(pretrained=False), architecture=RGB_ARCHITECTURE, descriptor_dim=448, config={}
    )
    fp = {
        "architecture": RGB_ARCHITECTURE,
        "weights_sha256": file_sha256(other),
        "input_size": [160, 120],
        "descriptor_dim": 448,
    }
    return make_student(fp, name="student_of_another_teacher", seed=1), fp


# ---- the rule ---------------------------------------------------------------------------------


def test_accepts_the_model_itself_or_a_query_encoder_for_it():
    teacher = {"architecture": "a", "weights_sha256": "t" * 64, "input_size": [160, 120], "descriptor_dim": 448}
    student = {**teacher, "weights_sha256": "s" * 64}
    other = {**teacher, "weights_sha256": "o" * 64}
    assert accepts(teacher, teacher) == [] and refusal(teacher, teacher) is None
    assert accepts(teacher, student) == ["weights_sha256"]  # a student without its declaration
    assert accepts(teacher, student, teacher) == []
    assert accepts(other, student, teacher) == ["weights_sha256"]
    assert accepts({**teacher, "input_size": [640, 480]}, student, teacher) == ["input_size"]
    reason = refusal(other, student, teacher, map_name="other.pt")
    assert reason.startswith("built with other.pt (a, weights sha256 oooooooooooo…, 160x120)")
    assert "trained for a (weights sha256 tttttttttttt…, 160x120) (they differ in weights_sha256)" in reason
    assert "\n" not in reason


def test_extractor_exposes_the_teacher_at_its_own_input_size(student, teacher):
    assert teacher.query_encoder_for is None
    at_160 = Extractor(student, device="cpu", image_size=SIZE, backend="torch")
    at_320 = Extractor(student, device="cpu", image_size=(320, 240), backend="torch")
    assert at_160.fingerprint["weights_sha256"] == file_sha256(student) != IMAGENET_SHA256
    assert at_160.query_encoder_for == teacher.fingerprint
    assert at_320.query_encoder_for == {**teacher.fingerprint, "input_size": [320, 240]}
    # A student answers like its teacher up to its perturbation (here ~1 % per weight).
    images = [np.random.default_rng(i).integers(0, 255, (120, 160, 3), dtype=np.uint8) for i in range(2)]
    cos = np.sum(at_160.embed(images) * teacher.embed(images), axis=1)
    assert np.all(cos > 0.9) and np.all(cos < 0.99999)


def test_onnx_cache_and_export_keep_the_declaration(student, teacher, tmp_path):
    """The ONNX Runtime path (cached export) and an .onnx file given directly stay query encoders."""
    from structvpr_core.backends.onnx_format import read_sidecar

    ort = Extractor(student, device="cpu", image_size=SIZE, backend="onnxruntime")
    assert ort.backend == "onnxruntime" and ort.query_encoder_for == teacher.fingerprint
    assert read_sidecar(ort.onnx_path)["query_encoder_for"] == teacher.fingerprint
    from_file = Extractor(ort.onnx_path, device="cpu", image_size=SIZE)
    assert from_file.query_encoder_for == teacher.fingerprint
    imagenet = Extractor(None, device="cpu", image_size=SIZE, backend="onnxruntime")
    assert read_sidecar(imagenet.onnx_path)["query_encoder_for"] is None


def test_structvpr_export_writes_the_declaration(student, teacher, corridor, tmp_path):
    from structvpr_core.export import export_model_files

    out = tmp_path / "student.onnx"
    sidecar = export_model_files(
        student, out, image_size=SIZE, parity_images=sorted((corridor / "ref").glob("*.jpg"))[:2], progress=False
    )
    assert sidecar["query_encoder_for"] == teacher.fingerprint
    assert Extractor(out, device="cpu", image_size=SIZE).query_encoder_for == teacher.fingerprint


# ---- maps -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_map(teacher, corridor, tmp_path_factory):
    """A map of 20 Corridor reference frames built by the teacher (ImageNet, 160×120)."""
    from structvpr_core.mapdb import MapDatabase

    refs = sorted((corridor / "ref").glob("*.jpg"))[:20]
    db = MapDatabase.create(teacher.fingerprint, teacher.dim, meta={"checkpoint": None, "features": "none"})
    db.add(teacher.embed_paths(refs, progress=False), [{"source": str(p)} for p in refs])
    path = tmp_path_factory.mktemp("maps") / "teacher"
    db.save(path)
    return path


def test_map_accepts_the_teachers_student_and_refuses_others(teacher_map, student, stranger):
    from structvpr_core.loopclosure import DetectorConfig, LoopClosureDetector
    from structvpr_core.mapdb import MapDatabase

    good = Extractor(student, device="cpu", image_size=SIZE, backend="torch")
    mapdb = MapDatabase.load(
        teacher_map, expected_fingerprint=good.fingerprint, query_encoder_for=good.query_encoder_for
    )
    LoopClosureDetector(good, mapdb, DetectorConfig())  # accepted for localization
    with pytest.raises(MapError, match="built with another model"):  # the declaration is what counts
        MapDatabase.load(teacher_map, expected_fingerprint=good.fingerprint)
    with pytest.raises(ConfigError, match=r"query encoder .* not add keyframes"):
        LoopClosureDetector(good, mapdb, DetectorConfig(mode="mapping"))
    bad = Extractor(stranger[0], device="cpu", image_size=SIZE, backend="torch")
    with pytest.raises(MapError) as err:
        MapDatabase.load(teacher_map, expected_fingerprint=bad.fingerprint, query_encoder_for=bad.query_encoder_for)
    message = str(err.value)
    assert "built with ImageNet RGB branch (" in message and IMAGENET_SHA256[:12] in message
    assert f"trained for structvpr-rgb-mobilenetv2 (weights sha256 {stranger[1]['weights_sha256'][:12]}" in message


def test_query_cli_with_a_query_encoder(teacher_map, student, stranger, corridor, tmp_path, capsys):
    queries = [str(p) for p in sorted((corridor / "query").glob("*.jpg"))[:3]]
    hits = tmp_path / "hits.json"
    common = ["query", "--map", str(teacher_map), *queries, "--top-k", "2", "--device", "cpu", "--backend", "torch"]
    assert main([*common, "--query-checkpoint", str(student), "--query-degrade", "jpeg=20", "--json", str(hits)]) == 0
    results = json.loads(hits.read_text())
    assert len(results) == 3 and all(len(r["candidates"]) == 2 for r in results)
    capsys.readouterr()
    assert main([*common, "--query-checkpoint", str(stranger[0])]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("structvpr query: error: ")
    assert "ImageNet RGB branch" in err and stranger[1]["weights_sha256"][:12] in err and "trained for" in err
    assert main([*common, "--query-degrade", "jpeg=500"]) == 1
    assert "JPEG quality must lie in 1..100" in capsys.readouterr().err


def test_build_map_refuses_a_query_encoder(student, corridor, tmp_path, capsys):
    out = tmp_path / "map"
    argv = ["build-map", "--images", str(corridor / "ref"), "--out", str(out), "--checkpoint", str(student)]
    assert main([*argv, "--size", "160", "120", "--device", "cpu", "--features", "none", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert "a query encoder (low-quality-query student of ImageNet RGB branch (" in err
    assert "does not build maps" in err and "--query-checkpoint" in err
    assert err.count("\n") == 0 and not out.exists()


# ---- eval -------------------------------------------------------------------------------------


def test_degraded_queries_lower_recall_and_have_their_own_cache(corridor, tmp_path, capsys):
    """`structvpr eval --query-degrade` on the real route: JPEG quality 5 costs recall; caches are per spec."""
    cache = tmp_path / "cache"
    base = ["eval", "--dataset", str(corridor), "--recall", "1", "5", "--cache-dir", str(cache), *CLI_SIZE]
    results = {}
    for spec in ("none", "jpeg=5"):
        out = tmp_path / f"{spec}.json"
        assert main([*base, "--query-degrade", spec, "--json", str(out)]) == 0
        results[spec] = json.loads(out.read_text())
    clean, jpeg5 = results["none"], results["jpeg=5"]
    print(f"Corridor 160x120 R@1/R@5: none {clean['recall']}, jpeg=5 {jpeg5['recall']}")
    assert jpeg5["query_degradation"] == "jpeg=5" and clean["query_degradation"] == "none"
    assert jpeg5["query_fingerprint"] == jpeg5["fingerprint"] and jpeg5["query_checkpoint"] is None
    assert clean["recall"]["1"] - jpeg5["recall"]["1"] >= JPEG5_MIN_DROP
    assert jpeg5["recall"]["5"] < clean["recall"]["5"]
    assert "queries: degraded 'jpeg=5' (seed 0)" in capsys.readouterr().out
    # One entry for the database, one per query degradation; the second run shares the database.
    assert len(list((cache / "descriptors").glob("*.npz"))) == 3
    # Again from the cache: the degraded run reads its own entry, never the clean queries'.
    out = tmp_path / "again.json"
    assert main([*base, "--query-degrade", "jpeg=5", "--json", str(out)]) == 0
    again = json.loads(out.read_text())
    assert again["descriptors_cached"] is True and again["recall"] == jpeg5["recall"]


def test_cache_keys_differ_per_spec_and_per_seed_only_when_random(corridor):
    ds = load_dataset(corridor)
    fp = {"architecture": "a", "weights_sha256": "0" * 64, "input_size": [160, 120], "descriptor_dim": 448}
    keys = {spec: cache_key(ds.queries, fp, spec) for spec in ("none", "jpeg=5", "jpeg=10", "size=80x60,jpeg=50")}
    assert len(set(keys.values())) == 4
    assert cache_key(ds.queries, fp, "") == cache_key(ds.queries, fp) == keys["none"]
    assert cache_key(ds.queries, fp, "jpeg=5", seed=3) == keys["jpeg=5"]  # no random draw: the seed is moot
    assert cache_key(ds.queries, fp, "jpeg=5..10", seed=0) != cache_key(ds.queries, fp, "jpeg=5..10", seed=1)
    assert cache_key(ds.queries, {**fp, "weights_sha256": "1" * 64}, "jpeg=5") != keys["jpeg=5"]


def test_random_degradations_are_deterministic_under_the_seed(corridor, teacher):
    ds = load_dataset(corridor)
    from structvpr_core.evaluate.descriptor_cache import embed_images

    paths = ds.queries[:6]
    a = embed_images(teacher, paths, "jpeg=5..40", seed=7, progress=False)
    b = embed_images(teacher, paths, "jpeg=5..40", seed=7, progress=False)
    c = embed_images(teacher, paths, "jpeg=5..40", seed=8, progress=False)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Image i's draw does not depend on the batch it is in.
    teacher.batch_size, old = 2, teacher.batch_size
    try:
        np.testing.assert_allclose(embed_images(teacher, paths, "jpeg=5..40", seed=7, progress=False), a, atol=1e-6)
    finally:
        teacher.batch_size = old


def test_eval_query_checkpoint_accepted_for_its_teacher_refused_otherwise(
    corridor, student, stranger, tmp_path, capsys
):
    base = ["eval", "--dataset", str(corridor), "--recall", "1", "5", "--no-cache", *CLI_SIZE]
    out = tmp_path / "student.json"
    assert main([*base, "--query-checkpoint", str(student), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["checkpoint"] is None and result["fingerprint"]["weights_sha256"] == IMAGENET_SHA256
    assert result["query_checkpoint"] == str(student)
    assert result["query_fingerprint"]["weights_sha256"] == file_sha256(student)
    assert result["query_encoder_for"] == result["fingerprint"]
    assert result["recall"]["5"] > 0.5  # the perturbed student still finds the places
    capsys.readouterr()
    assert main([*base, "--query-checkpoint", str(stranger[0])]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(
        f"structvpr eval: error: query model {stranger[0]}: the database was built with ImageNet RGB branch"
    )
    assert stranger[1]["weights_sha256"][:12] in err


def test_evaluate_refuses_a_plain_other_model(corridor, teacher):
    other = Extractor(None, device="cpu", image_size=(64, 48), backend="torch")
    with pytest.raises(ConfigError, match=r"built with another model \(input_size"):
        evaluate(load_dataset(corridor), teacher, query_extractor=other, use_cache=False, progress=False)


def test_eval_loop_with_degraded_queries_and_a_query_encoder(corridor, student, tmp_path):
    from structvpr_core import loop_eval

    conf = {
        "model": {"image_size": SIZE, "device": "cpu", "backend": "torch"},
        "query": {"checkpoint": student, "degradation": "size=80x60,jpeg=50"},
        "progress": False,
    }
    report = loop_eval.main(conf, corridor, json_out=tmp_path / "loop.json")
    assert report["query_degradation"] == "size=80x60,jpeg=50" and report["query_checkpoint"] == str(student)
    assert report["query_encoder_for"] == report["model"] != report["query_model"]
    assert 0.3 < report["retrieval"]["recall@5"] <= 1.0
    assert json.loads((tmp_path / "loop.json").read_text())["seed"] == 0
    with pytest.raises(ConfigError, match="does not build maps"):
        loop_eval.main({**conf, "model": {**conf["model"], "checkpoint": student}, "query": {}}, corridor)


# ---- the sweep --------------------------------------------------------------------------------


def test_degrade_sweep_writes_table_json_and_plot(corridor, student, tmp_path, capsys):
    import cv2

    out, png, cache = tmp_path / "sweep.json", tmp_path / "sweep.png", tmp_path / "cache"
    argv = ["degrade-sweep", "--dataset", str(corridor), "--degrade", "none", "--degrade", "jpeg=5"]
    argv += ["--query-checkpoint", str(student), "--cache-dir", str(cache), "--json", str(out), "--plot", str(png)]
    assert main([*argv, *CLI_SIZE]) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["degradations"] == ["none", "jpeg=5"]
    labels = [m["label"] for m in result["query_models"]]
    assert labels == ["ImageNet RGB branch", "imagenet_student.pt (query encoder)"]
    assert [(r["query_model"], r["degradation"]) for r in result["rows"]] == [
        (m, d) for m in labels for d in ("none", "jpeg=5")
    ]
    r1 = {(r["query_model"], r["degradation"]): r["recall"]["1"] for r in result["rows"]}
    assert r1[(labels[0], "none")] - r1[(labels[0], "jpeg=5")] >= JPEG5_MIN_DROP
    for label in labels:
        assert label in table
    assert "jpeg=5" in table and "R@1" in table
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 400
    # The database once (one entry), the queries once per model and degradation.
    assert len(list((cache / "descriptors").glob("*.npz"))) == 1 + 2 * 2


def test_degrade_sweep_bad_input_is_one_line(corridor, tmp_path, capsys):
    assert main(["degrade-sweep", "--dataset", str(corridor), "--degrade", "jpg=5", *CLI_SIZE]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown key 'jpg'" in err
    assert main(["degrade-sweep", "--dataset", str(corridor), "--plot", str(tmp_path / "p.pdf"), *CLI_SIZE]) == 1
    assert "PNG" in capsys.readouterr().err
