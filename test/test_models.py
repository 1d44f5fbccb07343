"""The two branches, the MC head, the triplet loss and the projector (real torch modules)."""

import math

import pytest
import torch
import torch.nn.functional as F

from structvpr_core.losses import Projector, triplet_loss
from structvpr_core.models import MultiLevelConcat, build_rgb_branch, build_seg_branch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rgb():
    return build_rgb_branch(pretrained=True).eval()


def test_rgb_branch_stages_and_dim(rgb):
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        stages = rgb.stages(x)
        desc = rgb(x)
    assert [tuple(f.shape[1:]) for f in stages] == [(16, 48, 64), (24, 24, 32), (32, 12, 16), (96, 6, 8), (320, 3, 4)]
    assert rgb.dim == 448 and desc.shape == (2, 448)
    assert torch.allclose(desc.norm(dim=1), torch.ones(2), atol=1e-5)
    # the final 1×1 conv to 1280 channels and the classifier are gone
    assert not any(isinstance(m, torch.nn.Conv2d) and m.out_channels == 1280 for m in rgb.modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in rgb.modules())


def test_rgb_branch_is_torchvision_imagenet_mobilenetv2_cut_before_last_conv(rgb):
    from torchvision.models import mobilenet_v2

    tv = mobilenet_v2(weights="IMAGENET1K_V1").eval()  # offline: the file is in torch.hub's cache
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f5 = rgb.stages(x)[4]
        expected = tv.features[:18](x)
    assert torch.allclose(f5, expected, atol=1e-5)


def test_mc_head_is_normalised_max_pool_concat():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, 5, 7, generator=g) for c in (4, 6, 8)]
    out = MultiLevelConcat()(feats)
    manual = []
    for f in feats:
        m = f.flatten(2).max(dim=2).values
        manual.append(m / m.norm(dim=1, keepdim=True))
    cat = torch.cat(manual, dim=1)
    assert torch.allclose(out, cat / math.sqrt(3), atol=1e-6)  # three unit vectors concatenated


def test_seg_branch_stages_dim_and_input_channels():
    for c in (6, 3, 150):
        seg = build_seg_branch(in_channels=c).eval()
        x = torch.rand(2, c, 64, 96)
        with torch.no_grad():
            stages = seg.stages(x)
            desc = seg(x)
        assert [tuple(f.shape[1:]) for f in stages] == [
            (16, 32, 48),
            (32, 16, 24),
            (64, 8, 12),
            (96, 4, 6),
            (320, 2, 3),
        ]
        assert seg.dim == 480 and desc.shape == (2, 480)
        assert torch.allclose(desc.norm(dim=1), torch.ones(2), atol=1e-5)
    # random init: two builds differ
    a, b = build_seg_branch(), build_seg_branch()
    assert not torch.equal(a.blocks[0][0].conv[0][0].weight, b.blocks[0][0].conv[0][0].weight)


def test_seg_branch_on_slme_input():
    import numpy as np

    from structvpr_core.slme import SLMEConfig, encode_label_map, num_channels

    # synthetic label map: sky over buildings over road, 60×80
    lm = np.zeros((60, 80), np.uint8)
    lm[:20], lm[20:40], lm[40:] = 3, 2, 7
    for cfg in (SLMEConfig(), SLMEConfig(clusters=0, taxonomy="cityscapes")):
        x = encode_label_map(lm, cfg, size=(96, 64))
        seg = build_seg_branch(in_channels=num_channels(cfg)).eval()
        with torch.no_grad():
            d = seg(x[None])
        assert d.shape == (1, 480) and torch.isfinite(d).all()


def test_seg_branch_trains():
    seg = build_seg_branch(in_channels=6).train()
    x = torch.rand(4, 6, 64, 64)
    desc = seg(x)
    loss = triplet_loss(desc[0:1], desc[1:2], desc[2:3], margin=0.5)
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None for p in seg.parameters() if p.requires_grad)


def test_triplet_loss_matches_definition():
    q = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.1, 0.0]])
    n = torch.tensor([[0.0, 1.05], [2.0, 0.0]])
    # d(q,p) - d(q,n) + m: 1 - 1.05 + 0.1 = 0.05 (active), 0.1 - 2 + 0.1 < 0 (zero)
    assert triplet_loss(q, p, n).item() == pytest.approx(0.05 / 2, abs=1e-5)
    assert triplet_loss(q, p, n, margin=0.04).item() == pytest.approx(0.0, abs=1e-5)
    # K negatives per query: mean over all B·K triplets
    nk = torch.stack([n, n + torch.tensor([0.0, 10.0])], dim=1)  # (2, 2, 2)
    assert triplet_loss(q, p, nk).item() == pytest.approx(0.05 / 4, abs=1e-5)


def test_projector_maps_rgb_to_seg_space():
    t = Projector()
    x = F.normalize(torch.randn(3, 448), dim=1)
    y = t(x)
    assert y.shape == (3, 480)
    target = F.normalize(torch.randn(3, 480), dim=1)
    ((y - target) ** 2).sum(dim=1).mean().backward()
    assert t.linear.weight.grad is not None and t.linear.weight.grad.abs().sum() > 0


def test_conv_bn_fusion_keeps_outputs(rgb):
    import copy

    from structvpr_core.models.fusion import fuse_conv_bn

    fused = fuse_conv_bn(copy.deepcopy(rgb))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.allclose(fused(x), rgb(x), atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(build_seg_branch().train())
