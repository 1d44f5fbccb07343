"""The distillation interface: the registry by name, StructVPR's KD through it, and a new one plugged in."""

import pickle
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from structvpr_core.errors import ConfigError
from structvpr_core.models import SegBranch
from structvpr_core.training.distill_structvpr import StructVPRDistillation
from structvpr_core.training.distillation import (
    Distillation,
    NoDistillation,
    TrainBatch,
    available_distillations,
    build_distillation,
    distillation_class,
)
from structvpr_core.training.losses_kd import tuple_loss
from structvpr_core.training.stage import TrainNet, tuple_losses

B, T, SIZE = 3, 3, 32  # tuples [q, p, n] of 3×32×32 images


class ToyStudent(nn.Module):
    """A 448-d stand-in for the RGB branch (the loss only needs descriptors)."""

    dim = 448

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3 * SIZE * SIZE, self.dim)

    def forward(self, x):
        return F.normalize(self.linear(x.flatten(1)), dim=1)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(B, T, 3, SIZE, SIZE, generator=g)
    rows = np.array([[0, 0, 5], [1, 2, 4], [2, 3, 1]], dtype=np.int64)  # [query, positive, negative]
    return TrainBatch(images=images, rows=rows)


def test_distillations_are_found_by_name():
    assert available_distillations()[:1] == ["none"] and "structvpr" in available_distillations()
    assert distillation_class("none") is NoDistillation
    assert distillation_class("structvpr") is StructVPRDistillation
    for bad in ("nope", "../stage", ""):
        with pytest.raises(ConfigError, match=r"unknown.*none, .*structvpr"):
            distillation_class(bad)


def test_structvpr_through_the_interface_is_the_stage2_loss():
    torch.manual_seed(0)
    student = ToyStudent()
    kd = build_distillation("structvpr", student, cfg=None)
    assert set(kd.modules()) == {"projector"}
    teacher_db = F.normalize(torch.randn(6, SegBranch.dim), dim=1).numpy()
    teacher_q = F.normalize(torch.randn(3, SegBranch.dim), dim=1).numpy()
    phi_of = {(0, 0): 0.0, (1, 2): 2.5, (2, 3): 1.0}
    kd.use_teacher(
        teacher_db, teacher_q, lambda q, p: np.array([phi_of[(a, b)] for a, b in zip(q, p, strict=True)], np.float32)
    )
    net = TrainNet(student, kd)
    assert (
        list(net.extras) == ["projector"] and net.extras["projector"] is kd.projector
    )  # trained and saved with the branch
    batch = _batch()
    loss, vpr, term, parts = tuple_losses(net, kd, batch, margin=0.5)

    descriptors = student(batch.images.flatten(0, 1)).view(B, T, -1)
    teacher = torch.from_numpy(np.stack([np.concatenate([teacher_q[r[:1]], teacher_db[r[1:]]]) for r in batch.rows]))
    want = tuple_loss(descriptors, 0.5, kd.projector(descriptors), teacher, torch.tensor([0.0, 2.5, 1.0]))
    for got, expected in zip((loss, vpr, term), want, strict=True):
        assert float(got.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert term.item() > 0 and parts == {}
    loss.backward()
    assert float(kd.projector.linear.weight.grad.abs().sum()) > 0


def test_no_distillation_is_the_triplet_loss_alone():
    student = ToyStudent()
    net = TrainNet(student)  # stage I
    assert len(net.extras) == 0
    batch = _batch(1)
    with torch.no_grad():
        loss, vpr, term, parts = tuple_losses(net, net.distillation, batch, margin=0.5)
        want, _, _ = tuple_loss(student(batch.images.flatten(0, 1)).view(B, T, -1), 0.5)
    assert float(loss) == float(vpr) == pytest.approx(float(want)) and float(term) == 0.0 and parts == {}


class FakeLoader:
    """Stands in for the stage's InputLoader: a fixed 3×32×32 tensor per path."""

    def __call__(self, path):
        return torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(zlib.crc32(str(path).encode())))


class GoodAndDegraded:
    """A tuple loader giving each image twice, stacked on channels: as it is, and degraded (the epoch seeds it)."""

    def __init__(self, loader, epoch):
        self.loader, self.epoch = loader, epoch

    def __call__(self, path):
        good = self.loader(path)
        factor = 2 + self.epoch % 3  # a stand-in for a seeded structvpr_core.degrade draw
        low = F.interpolate(F.avg_pool2d(good[None], factor), size=good.shape[-2:], mode="nearest")[0]
        return torch.cat([good, low])


class DegradedQueryKD(Distillation):
    """What a low-quality-query KD needs from the interface: both versions of every image, the
    student's intermediate features on the degraded one, a frozen teacher on the good one, a
    trainable adapter, named loss parts."""

    name = "toy_lq"

    def __init__(self, student, cfg=None):
        self.adapter = nn.Conv2d(320, 320, 1)
        self.teacher = SegBranch(in_channels=3).eval()  # frozen: an attribute, not a module()

    def modules(self):
        return {"adapter": self.adapter}

    def tuple_loader(self, loader, epoch):
        return GoodAndDegraded(loader, epoch)

    def forward(self, branch, modules, x):
        stages = branch.stages(x[:, 3:])  # the student sees the degraded image
        return {"descriptors": branch.head([stages[i] for i in branch.mc_stages]), "f5": modules["adapter"](stages[-1])}

    def loss(self, batch, outputs):
        with torch.no_grad():
            t_stages = self.teacher.stages(batch.images[:, :, :3].flatten(0, 1))  # the teacher, the good one
            t_desc = self.teacher.head([t_stages[i] for i in self.teacher.mc_stages])
        t_f5 = t_stages[-1].view(*outputs["f5"].shape)
        mse = (outputs["descriptors"] - t_desc.view_as(outputs["descriptors"])).pow(2).sum(-1).mean()
        ickd = (_channel_correlation(outputs["f5"]) - _channel_correlation(t_f5)).pow(2).mean()
        return mse + ickd, {"mse": mse, "ickd": ickd}


def _channel_correlation(f):
    """(..., C, H, W) -> (..., C, C) cosine similarities between channels (inter-channel correlation)."""
    v = F.normalize(f.flatten(-2), dim=-1)
    return v @ v.transpose(-1, -2)


def test_a_new_distillation_gets_both_images_features_and_its_own_modules():
    torch.manual_seed(0)
    student = SegBranch(in_channels=3)
    kd = DegradedQueryKD(student)
    net = TrainNet(student, kd)
    assert list(net.extras) == ["adapter"]
    assert not any(p is q for p in net.parameters() for q in kd.teacher.parameters())
    read = pickle.loads(pickle.dumps(kd.tuple_loader(FakeLoader(), epoch=1)))  # as DataLoader workers get it
    rows = _batch().rows
    images = torch.stack([torch.stack([read(f"img{i}.jpg") for i in row]) for row in rows])
    assert images.shape == (B, T, 6, SIZE, SIZE)
    out = net(images.flatten(0, 1))
    assert out["descriptors"].shape == (B * T, SegBranch.dim) and out["f5"].shape[:2] == (B * T, 320)
    loss, _, term, parts = tuple_losses(net, kd, TrainBatch(images=images, rows=rows), margin=0.1)
    assert set(parts) == {"mse", "ickd"} and term.item() == pytest.approx((parts["mse"] + parts["ickd"]).item())
    loss.backward()
    assert float(kd.adapter.weight.grad.abs().sum()) > 0  # the adapter trains through forward
    assert all(p.grad is None for p in kd.teacher.parameters())  # the teacher does not


def test_the_default_tuple_loader_is_the_stage_loader():
    loader = FakeLoader()
    assert NoDistillation().tuple_loader(loader, epoch=3) is loader
    assert StructVPRDistillation(ToyStudent(), cfg=None).tuple_loader(loader, epoch=3) is loader
