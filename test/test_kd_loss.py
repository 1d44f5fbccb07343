"""Stage-II loss of StructVPR against a direct, loop-by-loop evaluation of the formula."""

import pytest
import torch

from structvpr_core.losses import Projector
from structvpr_core.training.losses_kd import distillation_loss, tuple_loss


def _direct(sq, sp, sn, tq, tp, tn, phi, T, margin):
    """L = mean over triplets of [max(d(q,p) - d(q,n) + m, 0) + Σ_{I∈{q,p,n}} φ ‖t_I - T(s_I)‖²], by loops.

    Both terms are per-triplet means (Eq. 6 is written per triplet): with K negatives a tuple is K
    triplets, each with its own (q, p, n_k) distillation sum.
    """
    B, K = sn.shape[0], sn.shape[1]
    vpr = 0.0
    for b in range(B):
        for k in range(K):
            d_qp = torch.sqrt(((sq[b] - sp[b]) ** 2).sum())
            d_qn = torch.sqrt(((sq[b] - sn[b, k]) ** 2).sum())
            vpr += max(float(d_qp - d_qn) + margin, 0.0)
    vpr /= B * K
    kd = 0.0
    for b in range(B):
        for k in range(K):
            images = [(sq[b], tq[b]), (sp[b], tp[b]), (sn[b, k], tn[b, k])]
            kd += float(phi[b]) * sum(float(((t - T(s)) ** 2).sum()) for s, t in images)
    kd /= B * K
    return vpr + kd, vpr, kd


def _unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("k", [1, 3])
def test_stage2_loss_matches_the_formula(k):
    torch.manual_seed(0)
    B = 5
    sq, sp, sn = _unit(B, 448), _unit(B, 448), _unit(B, k, 448)
    tq, tp, tn = _unit(B, 480), _unit(B, 480), _unit(B, k, 480)
    phi = torch.tensor([0.0, 1.0, 7.85, 0.58, 3.6], dtype=torch.float64)
    T = Projector(448, 480).double()
    margin = 0.5  # large enough that some triplets are active and some are not at random init
    student = torch.cat([sq[:, None], sp[:, None], sn], dim=1)
    teacher = torch.cat([tq[:, None], tp[:, None], tn], dim=1)
    total, vpr, kd = tuple_loss(student, margin, T(student), teacher, phi)
    with torch.no_grad():
        want_total, want_vpr, want_kd = _direct(sq, sp, sn, tq, tp, tn, phi, T, margin)
    assert 0 < want_vpr  # the hinge is active somewhere
    # torch's pairwise distance adds eps = 1e-6 to the difference: agreement to ~1e-7, not exact
    assert float(vpr) == pytest.approx(want_vpr, rel=1e-5)
    assert float(kd) == pytest.approx(want_kd, rel=1e-9)
    assert float(total) == pytest.approx(want_total, rel=1e-5)


def test_zero_phi_gives_no_distillation_gradient_but_triplet_gradient():
    torch.manual_seed(1)
    s = _unit(3, 3, 448).float().requires_grad_()
    t = _unit(3, 3, 480).float()
    T = Projector()
    total, vpr, kd = tuple_loss(s, 2.0, T(s), t, torch.zeros(3))
    assert float(kd) == 0.0 and float(total) == float(vpr) > 0
    total.backward()
    assert all(float(p.grad.abs().sum()) == 0.0 for p in T.parameters())
    assert float(s.grad.abs().sum()) > 0


def test_stage1_and_none_method_have_no_distillation_term():
    s = _unit(2, 4, 448).float()
    total, vpr, kd = tuple_loss(s, 0.1)
    assert float(kd) == 0.0 and float(total) == float(vpr)


def test_distillation_weights_each_tuple_by_its_phi():
    projected = torch.zeros(2, 3, 4)
    teacher = torch.ones(2, 3, 4)  # ‖1 - 0‖² = 4 per image, 12 per tuple
    assert float(distillation_loss(projected, teacher, torch.tensor([1.0, 0.0]))) == pytest.approx(6.0)
    assert float(distillation_loss(projected, teacher, torch.tensor([2.0, 3.0]))) == pytest.approx(30.0)
    with pytest.raises(ValueError):
        distillation_loss(projected, teacher[:, :2], torch.ones(2))


def test_k_negatives_scale_the_distillation_per_triplet_not_per_negative():
    """K copies of one negative give the K = 1 loss (both terms are per-triplet means); the old
    scaling (a sum over the negatives) gave q²+p²+K·n² instead."""
    torch.manual_seed(2)
    s1, t1 = _unit(4, 3, 448), _unit(4, 3, 480)
    T = Projector(448, 480).double()
    phi = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    k = 4
    sk = torch.cat([s1[:, :2], s1[:, 2:].expand(-1, k, -1)], dim=1)
    tk = torch.cat([t1[:, :2], t1[:, 2:].expand(-1, k, -1)], dim=1)
    with torch.no_grad():
        _, vpr1, kd1 = tuple_loss(s1, 0.5, T(s1), t1, phi)
        _, vprk, kdk = tuple_loss(sk, 0.5, T(sk), tk, phi)
        per_image = ((t1 - T(s1)) ** 2).sum(-1)  # (B, 3)
        old = (phi * (per_image[:, 0] + per_image[:, 1] + k * per_image[:, 2])).mean()
    assert float(vprk) == pytest.approx(float(vpr1), rel=1e-9)
    assert float(kdk) == pytest.approx(float(kd1), rel=1e-9)
    assert abs(float(old) - float(kd1)) > 0.1 * float(kd1)  # the old scaling differs measurably
