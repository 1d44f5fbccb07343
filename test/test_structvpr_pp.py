"""StructVPR++ (our design, paper text unavailable): the label head, the teacher's pooling on true
masks, the one-vector descriptor and its per-label similarity identity, the ++ distillation,
checkpoints and maps refusing the other architecture. Real torch modules, real Corridor frames."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from structvpr_core.checkpoint import build_model_from_checkpoint, load_checkpoint, save_checkpoint
from structvpr_core.cli import main
from structvpr_core.errors import CheckpointError, ConfigError
from structvpr_core.extractor import Extractor
from structvpr_core.images import list_images, read_image
from structvpr_core.models import (
    DIMS,
    PP_RGB_ARCHITECTURE,
    PP_SEG_ARCHITECTURE,
    RGB_ARCHITECTURE,
    build_pp_student,
    build_pp_teacher,
    build_rgb_branch,
    descriptor_dim,
)
from structvpr_core.models.label_features import label_scales
from structvpr_core.slme import SLMEConfig, cluster_mask_config, encode_label_map, label_retrieval_weights
from structvpr_core.training.config import LabelFeaturesConfig, ModelConfig, TrainConfig
from structvpr_core.training.distill_structvpr_pp import (
    StructVPRPPDistillation,
    TeacherParts,
    soft_cross_entropy,
    split_teacher_rows,
)
from structvpr_core.training.distillation import TrainBatch, build_distillation
from structvpr_core.training.losses_kd import distillation_loss
from structvpr_core.training.stage import TrainNet, tuple_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")

W6 = label_retrieval_weights(6)


def _student(seed=0, **kw):
    torch.manual_seed(seed)
    kw.setdefault("weights", label_retrieval_weights(kw.get("clusters", 6)))
    return build_pp_student(pretrained=True, **kw).eval()


@pytest.fixture(scope="module")
def student():
    return _student()


# -- the model --------------------------------------------------------------------------------


def test_retrieval_weights_are_the_prior_scaled_with_dynamic_zero():
    assert label_retrieval_weights(6) == [0.25, 0.0, 0.5, 0.5, 1.0, 1.0]  # veg, dynamic, sky, ground, bldg, other
    assert label_retrieval_weights(3) == [0.5, 0.0, 1.0]  # sky_ground, dynamic, static
    with pytest.raises(ConfigError, match="3 or 6"):
        label_retrieval_weights(0)


@pytest.mark.parametrize(("clusters", "label_dim", "dim"), [(6, 64, 832), (3, 32, 544), (6, 128, 1216)])
def test_dimensions_unit_norm_masks_and_presence(clusters, label_dim, dim):
    model = _student(clusters=clusters, label_dim=label_dim)
    assert model.dim == dim == descriptor_dim(PP_RGB_ARCHITECTURE, model.init_kwargs())
    x = torch.randn(2, 3, 240, 320)
    with torch.no_grad():
        out = model.parts(x)
    assert out["descriptor"].shape == (2, dim) and out["global"].shape == (2, 448)
    assert out["labels"].shape == (2, clusters, label_dim) and out["presence"].shape == (2, clusters)
    assert out["masks"].shape == (2, clusters, 15, 20)  # stride 16 (F4's grid; F5 upsampled to it)
    assert torch.allclose(out["descriptor"].norm(dim=1), torch.ones(2), atol=1e-6)
    assert torch.allclose(out["labels"].norm(dim=2), torch.ones(2, clusters), atol=1e-6)
    assert torch.allclose(out["masks"].sum(dim=1), torch.ones(2, 15, 20), atol=1e-6)  # softmax over labels
    assert torch.allclose(out["presence"].sum(dim=1), torch.ones(2), atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(x), out["descriptor"]) and torch.equal(model.masks(x), out["masks"])
    assert DIMS[PP_RGB_ARCHITECTURE] == 832 and DIMS[PP_SEG_ARCHITECTURE] == 864 and DIMS[RGB_ARCHITECTURE] == 448


@pytest.mark.parametrize("presence_weighting", [True, False])
def test_per_label_similarity_identity(presence_weighting):
    """z_a·z_b = (cos(x_a, x_b) + λ Σ_c w_c² p̂_c^a p̂_c^b cos(l_c^a, l_c^b)) / (‖u_a‖ ‖u_b‖)."""
    lam = 0.7
    model = _student(lam=lam, presence_weighting=presence_weighting).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 96, 128, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out = model.parts(x)
    xg, lab, p = out["global"], out["labels"], out["presence"]
    w = torch.tensor(W6, dtype=torch.float64)
    p_hat = p / p.norm(dim=1, keepdim=True) if presence_weighting else torch.full_like(p, 6**-0.5)
    cos_x = (xg[0] * xg[1]).sum()
    cos_l = (lab[0] * lab[1]).sum(dim=1)  # per label
    norms = torch.sqrt(1 + lam * (w**2 * p_hat**2).sum(dim=1))  # ‖u‖, x_g and l_c unit vectors
    expected = (cos_x + lam * (w**2 * p_hat[0] * p_hat[1] * cos_l).sum()) / (norms[0] * norms[1])
    got = (out["descriptor"][0] * out["descriptor"][1]).sum()
    assert float(got) == pytest.approx(float(expected), abs=1e-12)
    # the label part is not negligible: without it the similarity would differ
    assert abs(float(got) - float(cos_x)) > 1e-4


def test_label_part_off_is_the_structvpr_global_descriptor():
    """λ = 0: the descriptor is StructVPR's x_g (the same ImageNet backbone) padded with zeros."""
    model = _student(lam=0.0)
    rgb = build_rgb_branch(pretrained=True).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        z, xg = model(x), rgb(x)
    assert torch.allclose(z[:, :448], xg, atol=1e-7) and torch.count_nonzero(z[:, 448:]) == 0
    scales = label_scales(torch.tensor([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0]]), torch.tensor(W6), lam=0.0)
    assert torch.count_nonzero(scales) == 0


def test_teacher_pools_its_features_with_the_true_label_masks():
    """A hand-made ADE20K label map: sky over the top half, road (ground) below, one unlabelled row."""
    torch.manual_seed(0)
    cfg = SLMEConfig()
    teacher = build_pp_teacher(6, weights=W6).eval()
    label = np.full((64, 96), 7, np.uint8)  # road → ground
    label[:32] = 3  # sky
    label[63] = 0  # unlabelled: no cluster
    slme = encode_label_map(label, cfg, size=None)
    masks = encode_label_map(label, cluster_mask_config(cfg, 6), size=None)
    assert masks.sum(0)[:63].eq(1).all() and masks[:, 63].eq(0).all()  # one-hot, unlabelled all-zero
    x = torch.cat([slme, masks])[None]
    with torch.no_grad():
        out = teacher.parts(x)
        f = teacher.stages(slme[None])
        g = torch.cat([f[3], F.interpolate(f[4], size=f[3].shape[-2:], mode="bilinear", align_corners=False)], 1)
        proj = teacher.label_proj(g)[0]  # (64, 4, 6): stride-16 grid of the 64×96 input
    sky, ground = 2, 3
    expected_p = torch.zeros(6)
    expected_p[sky], expected_p[ground] = 32 * 96 / (64 * 96), 31 * 96 / (64 * 96)
    assert torch.allclose(out["presence"][0], expected_p, atol=1e-7)  # exact pixel fractions
    assert out["masks"].shape == (1, 6, 4, 6)
    assert torch.allclose(out["masks"][0, sky, :2], torch.ones(2, 6)) and out["masks"][0, sky, 2:].eq(0).all()
    assert torch.allclose(out["masks"][0, ground, 3], torch.full((6,), 15 / 16))  # area fraction of the last row
    want_sky = F.normalize(proj[:, :2].mean(dim=(1, 2)), dim=0)
    rows = out["masks"][0, ground]  # (4, 6): 0, 0, 1, 15/16
    want_ground = F.normalize((proj * rows).sum(dim=(1, 2)) / rows.sum(), dim=0)
    assert torch.allclose(out["labels"][0, sky], want_sky, atol=1e-5)
    assert torch.allclose(out["labels"][0, ground], want_ground, atol=1e-5)
    absent = [0, 1, 4, 5]
    assert out["labels"][0, absent].eq(0).all()  # absent labels pool nothing
    assert out["descriptor"].shape == (1, 864) and float(out["descriptor"].norm()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="12 input channels"):
        teacher(slme[None])


# -- checkpoints, the extractor and maps ------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, student):
    d = tmp_path_factory.mktemp("pp-ckpt")
    pp, rgb = d / "pp.pt", d / "structvpr.pt"
    save_checkpoint(pp, student, architecture=PP_RGB_ARCHITECTURE, descriptor_dim=832, config={})
    plain = build_rgb_branch(pretrained=True).eval()
    save_checkpoint(rgb, plain, architecture=RGB_ARCHITECTURE, descriptor_dim=448, config={})
    teacher = d / "teacher.pt"
    torch.manual_seed(0)
    t = build_pp_teacher(6, weights=W6, label_dim=16).eval()
    save_checkpoint(teacher, t, architecture=PP_SEG_ARCHITECTURE, descriptor_dim=480 + 6 * 16, config={})
    return {"pp": pp, "rgb": rgb, "teacher": teacher}


def test_checkpoint_round_trip_and_architecture_checks(checkpoints, student, tmp_path):
    ckpt = load_checkpoint(checkpoints["pp"], expected_architecture=PP_RGB_ARCHITECTURE)
    assert ckpt["descriptor_dim"] == 832 and ckpt["model_args"]["weights"] == W6
    loaded = build_model_from_checkpoint(checkpoints["pp"])
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))
    assert build_model_from_checkpoint(checkpoints["teacher"]).dim == 576
    with pytest.raises(CheckpointError, match="holds architecture 'structvpr-pp-rgb-mobilenetv2'"):
        load_checkpoint(checkpoints["pp"], expected_architecture=RGB_ARCHITECTURE)
    with pytest.raises(CheckpointError, match="descriptor dim 832, got 448"):
        save_checkpoint(tmp_path / "x.pt", student, architecture=PP_RGB_ARCHITECTURE, descriptor_dim=448, config={})
    with pytest.raises(CheckpointError, match="not a model that embeds RGB images"):
        Extractor(checkpoints["teacher"], backend="torch")


def test_extractor_runs_the_student_and_its_masks_in_both_runtimes(checkpoints, corridor, student):
    images = [read_image(p) for p in list_images(corridor / "ref")[:3]]
    torch_ex = Extractor(checkpoints["pp"], backend="torch", image_size=(160, 120))
    ort_ex = Extractor(checkpoints["pp"], backend="onnxruntime", image_size=(160, 120))
    assert torch_ex.fingerprint["architecture"] == PP_RGB_ARCHITECTURE and torch_ex.dim == 832
    assert ort_ex.fingerprint == torch_ex.fingerprint
    a, b = torch_ex.embed(images), ort_ex.embed(images)
    assert a.shape == (3, 832) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert (a * b).sum(axis=1).min() > 0.9999
    ma, mb = torch_ex.masks(images), ort_ex.masks(images)
    assert ma.shape == (3, 6, 8, 10) and np.allclose(ma.sum(axis=1), 1, atol=1e-5)
    assert np.abs(ma - mb).max() < 1e-4
    plain = Extractor(checkpoints["rgb"], backend="torch", image_size=(160, 120))
    assert not plain.has_masks
    with pytest.raises(ConfigError, match="no label masks"):
        plain.masks(images)


ARCH = {"rgb": RGB_ARCHITECTURE, "pp": PP_RGB_ARCHITECTURE}


def _copy_frames(corridor, out, n=6):
    out.mkdir()
    for p in list_images(corridor / "ref")[:n]:
        shutil.copy(p, out / p.name)
    return out


@pytest.mark.parametrize(("built_with", "queried_with"), [("rgb", "pp"), ("pp", "rgb")])
def test_a_map_refuses_the_other_architecture(checkpoints, corridor, tmp_path, capsys, built_with, queried_with):
    frames = _copy_frames(corridor, tmp_path / "frames")
    common = ["--size", "160", "120", "--device", "cpu", "--backend", "torch"]
    build = ["build-map", "--images", frames, "--out", tmp_path / "map", "--checkpoint", checkpoints[built_with]]
    assert main([str(a) for a in [*build, *common, "--features", "none", "--no-progress"]]) == 0
    capsys.readouterr()
    query = ["query", "--map", tmp_path / "map", "--checkpoint", checkpoints[queried_with]]
    code = main([str(a) for a in [*query, "--device", "cpu", "--backend", "torch", list_images(frames)[0]]])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in err
    assert "architecture" in err and "descriptor_dim" in err
    dims = {"rgb": 448, "pp": 832}
    # expected: the querying model's; found: the map's
    assert f"descriptor_dim: expected {dims[queried_with]}, found {dims[built_with]}" in err
    assert f"architecture: expected '{ARCH[queried_with]}', found '{ARCH[built_with]}'" in err


# -- the ++ distillation ----------------------------------------------------------------------


def _cfg(**label) -> TrainConfig:
    cfg = TrainConfig()
    cfg.model = ModelConfig(label_features=LabelFeaturesConfig(**label))
    return cfg


B, T, H, W = 2, 3, 64, 64  # tuples [q, p, n] of 64×64 images: a 4×4 stride-16 grid


def _pp_batch(clusters=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randn(B, T, 3, H, W, generator=g)
    ids = torch.randint(0, clusters, (B, T, 4, 4), generator=g)  # a label per 16×16 cell
    full = F.one_hot(ids, clusters).permute(0, 1, 4, 2, 3).float()
    full = full.repeat_interleave(16, dim=3).repeat_interleave(16, dim=4)
    full[..., :16, :16] = 0  # an unlabelled cell
    rows = np.array([[0, 0, 3], [1, 2, 1]], dtype=np.int64)
    return TrainBatch(images=torch.cat([rgb, full], dim=2), rows=rows), ids


def _teacher_rows(n, clusters, label_dim, seed):
    g = torch.Generator().manual_seed(seed)
    xg = F.normalize(torch.randn(n, 480, generator=g), dim=1)
    t = F.normalize(torch.randn(n, clusters, label_dim, generator=g), dim=2)
    p = torch.rand(n, clusters, generator=g)
    p[:, 0] = 0.005  # below the 1 % presence threshold: no label KD for cluster 0
    return torch.cat([xg, t.flatten(1), p], dim=1).numpy()


def _phi(q, p):
    return np.where(np.asarray(q) == 0, 0.5, 2.0).astype(np.float32)


def test_structvpr_pp_loss_through_the_interface():
    cfg = _cfg(dim=16, beta=0.7, gamma=0.3)
    student = _student(label_dim=16)
    kd = build_distillation("structvpr_pp", student, cfg)
    assert isinstance(kd, StructVPRPPDistillation) and set(kd.modules()) == {"projector", "label_projectors"}
    db, q = _teacher_rows(4, 6, 16, 1), _teacher_rows(2, 6, 16, 2)
    kd.use_teacher(db, q, _phi)
    net = TrainNet(student, kd).train()
    batch, ids = _pp_batch()
    loss, _, term, parts = tuple_losses(net, kd, batch, margin=0.1)
    assert set(parts) == {"global", "label", "ce"}

    # by hand, from the same forward pass
    with torch.no_grad():
        out = student.parts(batch.images[:, :, :3].flatten(0, 1))
        teacher = torch.from_numpy(np.stack([np.concatenate([q[r[:1]], db[r[1:]]]) for r in batch.rows]))
        tg, tl, tp = split_teacher_rows(teacher, 6, 16)
        phi = torch.tensor([0.5, 2.0])
        xg = out["global"].view(B, T, -1)
        glob = (phi * (tg - kd.projector(xg)).pow(2).sum(dim=(1, 2))).mean()
        lab = kd.label_projectors(out["labels"]).view(B, T, 6, 16)
        per = ((tl - lab).pow(2).sum(-1) * (tp >= 0.01)).sum(dim=(1, 2))
        label = 0.7 * (phi * per).mean()
        logp = F.log_softmax(out["logits"], dim=1).view(B, T, 6, 4, 4)
        hard = ids.clone()
        hard[..., 0, 0] = -100  # the unlabelled cell is ignored
        ce_img = F.cross_entropy(logp.flatten(0, 1), hard.flatten(0, 1), ignore_index=-100, reduction="none")
        ce = 0.3 * (ce_img.sum(dim=(1, 2)) / 15).view(B, T).sum(1).mean()
    for name, want in (("global", glob), ("label", label), ("ce", ce)):
        assert float(parts[name].detach()) == pytest.approx(float(want), rel=1e-4), name
    assert float(term.detach()) == pytest.approx(float(glob + label + ce), rel=1e-5)
    loss.backward()
    for module in (kd.projector, kd.label_projectors, student.label_logits, student.label_proj):
        assert all(float(p.grad.abs().sum()) > 0 for p in module.parameters())


def test_absent_labels_get_no_label_kd_and_weights_switch_terms_off():
    student = _student(label_dim=16)
    db, q = _teacher_rows(4, 6, 16, 1), _teacher_rows(2, 6, 16, 2)
    batch, _ = _pp_batch()

    def terms(cfg, db=db):
        torch.manual_seed(3)
        kd = build_distillation("structvpr_pp", student, cfg)
        kd.use_teacher(db, q, _phi)
        with torch.no_grad():
            return tuple_losses(TrainNet(student, kd), kd, batch, margin=0.1)[3]

    base = terms(_cfg(dim=16))
    moved = db.copy()
    moved[:, 480 : 480 + 16] = 100.0  # cluster 0's teacher feature, absent everywhere (p = 0.5 %)
    assert float(terms(_cfg(dim=16), moved)["label"]) == pytest.approx(float(base["label"]), rel=1e-6)
    off = terms(_cfg(dim=16, beta=0.0, gamma=0.0))
    assert float(off["label"]) == 0.0 and float(off["ce"]) == 0.0
    assert float(off["global"]) == pytest.approx(float(base["global"]), rel=1e-6)
    assert float(terms(_cfg(dim=16, ce=False))["ce"]) == 0.0


def test_global_term_is_structvprs_distillation_on_x_g():
    student = _student(label_dim=16)
    kd = build_distillation("structvpr_pp", student, _cfg(dim=16, beta=0.0, gamma=0.0))
    db, q = _teacher_rows(4, 6, 16, 1), _teacher_rows(2, 6, 16, 2)
    kd.use_teacher(db, q, _phi)
    batch, _ = _pp_batch()
    with torch.no_grad():
        _, _, term, _ = tuple_losses(TrainNet(student, kd), kd, batch, margin=0.1)
        xg = student.parts(batch.images[:, :, :3].flatten(0, 1))["global"].view(B, T, -1)
        teacher = torch.from_numpy(np.stack([np.concatenate([q[r[:1]], db[r[1:]]]) for r in batch.rows]))
        want = distillation_loss(kd.projector(xg), teacher[..., :480], torch.tensor([0.5, 2.0]))
    assert float(term) == pytest.approx(float(want), rel=1e-6)


def test_soft_cross_entropy_uses_area_fractions():
    logits = torch.randn(1, 1, 3, 1, 1)
    target = torch.zeros(1, 1, 3, 4, 4)
    target[0, 0, 0, :2] = 1  # half the pixels label 0
    target[0, 0, 2, 2:3] = 1  # a quarter label 2, the last quarter unlabelled
    got = soft_cross_entropy(F.log_softmax(logits, dim=2), target)
    logp = F.log_softmax(logits[0, 0, :, 0, 0], dim=0)
    assert float(got) == pytest.approx(float(-(2 / 3) * logp[0] - (1 / 3) * logp[2]), rel=1e-6)


def test_teacher_parts_rows_and_config_checks():
    torch.manual_seed(0)
    teacher = build_pp_teacher(6, weights=W6, label_dim=8).eval()
    wrapped = TeacherParts(teacher)
    x = torch.cat([torch.rand(2, 6, 64, 64), _pp_batch()[0].images[0, :2, 3:]], dim=1)
    with torch.no_grad():
        rows, out = wrapped(x), teacher.parts(x)
    assert rows.shape == (2, wrapped.dim) == (2, 480 + 48 + 6)
    g, t, p = split_teacher_rows(rows, 6, 8)
    assert torch.equal(g, out["global"]) and torch.equal(t, out["labels"]) and torch.equal(p, out["presence"])
    with pytest.raises(ConfigError, match=r"needs model\.label_features"):
        build_distillation("structvpr_pp", _student(label_dim=8), TrainConfig())
    with pytest.raises(ConfigError, match="not the \\+\\+ student"):
        build_distillation("structvpr_pp", _student(label_dim=8), _cfg(dim=16))
    kd = build_distillation("structvpr_pp", _student(label_dim=8), _cfg(dim=8, clusters=6))
    with pytest.raises(ConfigError, match=r"teacher has 6 label clusters of 8 .* config says 6 of 16"):
        StructVPRPPDistillation(_student(label_dim=16), _cfg(dim=16))._checked_teacher(teacher)
    assert kd.tuple_loader("stage loader", 1) == "stage loader"  # before prepare: the stage's own


def test_label_features_config_is_strict():
    from structvpr_core.config import from_dict

    cfg = from_dict(TrainConfig, {"model": {"label_features": {"dim": 32, "clusters": 3}}})
    assert cfg.model.plus_plus.model_args() == {
        "clusters": 3,
        "label_dim": 32,
        "weights": [0.5, 0.0, 1.0],
        "lam": 1.0,
        "presence_weighting": True,
        "eps": 1e-6,
    }
    assert from_dict(TrainConfig, {"model": {"label_features": {"enabled": False}}}).model.plus_plus is None
    assert from_dict(TrainConfig, {}).model.plus_plus is None
    for bad, msg in (
        ({"dims": 3}, "unknown key 'dims'"),
        ({"clusters": 4}, "clusters: expected 3 or 6"),
        ({"retrieval_weights": [1, 2]}, "retrieval_weights: expected 6"),
        ({"gamma": -1}, "gamma: must be >= 0"),
    ):
        with pytest.raises(ConfigError, match=msg):
            from_dict(TrainConfig, {"model": {"label_features": bad}})


def test_the_new_label_head_may_train_at_its_own_rate():
    from structvpr_core.training.config import StageConfig
    from structvpr_core.training.stage import _optimizer

    pp = _student(label_dim=8)
    opt = _optimizer(StageConfig(lr=1e-5, head_lr=1e-3, projector_lr=1e-2), TrainNet(pp))
    assert [g["lr"] for g in opt.param_groups] == [1e-5, 1e-3]
    head = {id(p) for p in opt.param_groups[1]["params"]}
    assert head == {id(p) for p in [*pp.label_logits.parameters(), *pp.label_proj.parameters()]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(pp.parameters()))
    plain = _optimizer(StageConfig(lr=1e-5, head_lr=1e-3), TrainNet(build_rgb_branch(pretrained=False)))
    assert [g["lr"] for g in plain.param_groups] == [1e-5]  # plain StructVPR: no head, one group as before


def test_parts_recovered_from_the_descriptor_and_the_aligned_rescore():
    from structvpr_core.models.label_features import aligned_scores, split_descriptor

    model = _student(lam=0.8).double()
    with torch.no_grad():
        out = model.parts(torch.randn(3, 3, 96, 128, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    z = out["descriptor"].numpy()
    xg, lab, s = split_descriptor(z, 448, 6, 64)
    p_hat = out["presence"] / out["presence"].norm(dim=1, keepdim=True)
    want_s = (0.8**0.5 * torch.tensor(W6, dtype=torch.float64) * p_hat).numpy()
    assert np.allclose(xg, out["global"].numpy(), atol=1e-12) and np.allclose(s, want_s, atol=1e-12)
    keep = np.array(W6) > 0  # dynamic has weight 0: its feature is not in the descriptor
    assert np.allclose(lab[:, keep], out["labels"].numpy()[:, keep], atol=1e-10) and not lab[:, ~keep].any()
    got = aligned_scores(z[0], z[1:], 448, 6, 64)
    m = np.minimum(s[0], s[1:]) ** 2
    cos_l = (lab[0][None] * lab[1:]).sum(-1)
    assert np.allclose(got, (xg[1:] @ xg[0] + (m * cos_l).sum(1)) / (1 + m.sum(1)), atol=1e-12)
    assert aligned_scores(z[0], z[:1], 448, 6, 64)[0] == pytest.approx(1.0, abs=1e-12)  # itself: 1
