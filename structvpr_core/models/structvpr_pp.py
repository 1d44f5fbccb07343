"""The StructVPR++ branches: the RGB student with its label head, and the seg teacher pooling true masks.

Only the abstract of StructVPR++ (Shen et al., TPAMI 2025) was readable here; everything in
this file beyond "label-specific features decoupled from the global descriptor, compared label
by label, no segmentation at inference" is **our design (paper text unavailable)**, as summarised
in the README section "StructVPR vs StructVPR++". The formulas are in ``label_features``.

Student ``structvpr-pp-rgb-mobilenetv2`` (what runs on the robot): the StructVPR RGB branch
(MobileNetV2 stages, x_g = MC(F3, F4, F5), 448-d) plus a label head on
G = concat(F4, up(F5)) (416 channels, stride 16): a 1×1 conv to C logits, softmax over the C
labels → soft masks A_c, and a 1×1 conv P: 416 → d_l. Its descriptor is z (448 + C·d_l; 832
for the defaults C = 6, d_l = 64). No segmentation runs at inference: the masks come out of
the same forward pass (``masks``, and the ONNX export's second output) for a debug view.

Teacher ``structvpr-pp-seg-mobilenetl`` (training only): the StructVPR seg branch (MobileNet-L
on the SLME tensor, x_g 480-d) with its own P on its own G, pooled with the *true* SLME cluster
masks area-downsampled to stride 16; presence from the label map (the exact fraction of pixels
of each cluster). Its input is the SLME tensor followed by the C one-hot cluster masks at full
resolution, (B, in_channels + C, H, W) (``training.inputs`` builds it). Descriptor 480 + C·d_l.

Both keep the StructVPR interface (``forward`` → unit descriptor, ``stages``, ``dim``,
``architecture``, ``init_kwargs``); ``parts`` returns every intermediate a distillation needs.
"""

from __future__ import annotations

import torch
from torch import nn

from .label_features import (
    DEFAULT_EPS,
    G_CHANNELS,
    area_downsample,
    check_label_args,
    compose_descriptor,
    label_pool,
    presence,
    stride16_features,
)
from .rgb_branch import RGBBranch
from .seg_branch import SegBranch

STUDENT_ARCHITECTURE = "structvpr-pp-rgb-mobilenetv2"
TEACHER_ARCHITECTURE = "structvpr-pp-seg-mobilenetl"
DEFAULT_CLUSTERS = 6
DEFAULT_LABEL_DIM = 64


class _LabelDescriptor:
    """What both ++ branches share: the label arguments, their dimension and the composition."""

    def _setup_labels(self, base_dim, clusters, label_dim, weights, lam, presence_weighting, eps) -> None:
        weights = check_label_args(int(clusters), int(label_dim), weights, float(lam), float(eps))
        self.clusters, self.label_dim = int(clusters), int(label_dim)
        self.lam, self.presence_weighting, self.eps = float(lam), bool(presence_weighting), float(eps)
        self.global_dim = base_dim
        self.dim = base_dim + self.clusters * self.label_dim
        # Not persistent: the values come from init_kwargs (the checkpoint's model_args).
        self.register_buffer("retrieval_weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.label_proj = nn.Conv2d(G_CHANNELS, self.label_dim, kernel_size=1)

    def _label_kwargs(self) -> dict:
        return {
            "clusters": self.clusters,
            "label_dim": self.label_dim,
            "weights": [float(w) for w in self.retrieval_weights.tolist()],
            "lam": self.lam,
            "presence_weighting": self.presence_weighting,
            "eps": self.eps,
        }

    def _compose(self, global_desc, labels, presence_):
        return compose_descriptor(
            global_desc, labels, presence_, self.retrieval_weights, self.lam, self.presence_weighting
        )

    @classmethod
    def dim_for(cls, model_args: dict) -> int:
        """The descriptor dimension of the model ``cls(**model_args)`` would build."""
        c = int(model_args.get("clusters", DEFAULT_CLUSTERS))
        d = int(model_args.get("label_dim", DEFAULT_LABEL_DIM))
        return cls.global_dim_default + c * d


class StructVPRPPStudent(_LabelDescriptor, RGBBranch):
    """The RGB student of StructVPR++: x_g of StructVPR plus the label head (see the module docstring)."""

    architecture = STUDENT_ARCHITECTURE
    global_dim_default = RGBBranch.dim
    dim = RGBBranch.dim + DEFAULT_CLUSTERS * DEFAULT_LABEL_DIM  # the defaults; instances know their own
    onnx_outputs = ("descriptor", "masks")
    export_masks = False  # set on the ONNX export's copy: forward then returns (descriptor, masks)

    def __init__(
        self,
        pretrained: bool = True,
        *,
        clusters: int = DEFAULT_CLUSTERS,
        label_dim: int = DEFAULT_LABEL_DIM,
        weights: list[float] | None = None,
        lam: float = 1.0,
        presence_weighting: bool = True,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__(pretrained=pretrained)
        self._setup_labels(RGBBranch.dim, clusters, label_dim, weights, lam, presence_weighting, eps)
        self.label_logits = nn.Conv2d(G_CHANNELS, self.clusters, kernel_size=1)

    def init_kwargs(self) -> dict:
        return self._label_kwargs()

    def head_parameters(self):
        """The randomly initialised label head (on the ImageNet backbone): training may give it its own rate."""
        return [*self.label_logits.parameters(), *self.label_proj.parameters()]

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything of one forward pass on RGB input (B, 3, H, W).

        ``descriptor`` z (B, dim); ``global`` x_g (B, 448); ``labels`` l (B, C, d_l), unit rows;
        ``presence`` p (B, C); ``logits`` and ``masks`` A = softmax(logits) (B, C, H/16, W/16).
        """
        f = self.stages(x)
        global_desc = self.head([f[i] for i in self.mc_stages])
        g = stride16_features(f[3], f[4])
        logits = self.label_logits(g)
        masks = torch.softmax(logits, dim=1)
        labels = label_pool(self.label_proj(g), masks, self.eps)
        p = presence(masks)
        return {
            "descriptor": self._compose(global_desc, labels, p),
            "global": global_desc,
            "labels": labels,
            "presence": p,
            "logits": logits,
            "masks": masks,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.export_masks:
            return self.forward_with_masks(x)
        return self.parts(x)["descriptor"]

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """The soft label masks A (B, C, H/16, W/16), each pixel's C values summing to 1."""
        return self.parts(x)["masks"]

    def forward_with_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(descriptor, masks): the two outputs of the ONNX export, in ``onnx_outputs`` order."""
        out = self.parts(x)
        return out["descriptor"], out["masks"]


class StructVPRPPTeacher(_LabelDescriptor, SegBranch):
    """The seg teacher of StructVPR++: pools its own G with the true cluster masks (see the module docstring)."""

    architecture = TEACHER_ARCHITECTURE
    global_dim_default = SegBranch.dim
    dim = SegBranch.dim + DEFAULT_CLUSTERS * DEFAULT_LABEL_DIM

    def __init__(
        self,
        in_channels: int = 6,
        *,
        clusters: int = DEFAULT_CLUSTERS,
        label_dim: int = DEFAULT_LABEL_DIM,
        weights: list[float] | None = None,
        lam: float = 1.0,
        presence_weighting: bool = True,
        eps: float = DEFAULT_EPS,
    ) -> None:
        super().__init__(in_channels=in_channels)
        self._setup_labels(SegBranch.dim, clusters, label_dim, weights, lam, presence_weighting, eps)

    @property
    def input_channels(self) -> int:
        """Channels of the input tensor: the SLME channels, then one mask per label cluster."""
        return self.in_channels + self.clusters

    def init_kwargs(self) -> dict:
        return {"in_channels": self.in_channels, **self._label_kwargs()}

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``descriptor`` z^D, ``global`` x_g (B, 480), ``labels`` t (B, C, d_l), ``presence`` (B, C),
        ``masks`` (the true ones, area-downsampled to stride 16)."""
        if x.shape[1] != self.input_channels:
            raise ValueError(
                f"expected {self.input_channels} input channels ({self.in_channels} SLME + {self.clusters} masks), "
                f"got {x.shape[1]}"
            )
        slme, full_masks = x[:, : self.in_channels], x[:, self.in_channels :]
        f = self.stages(slme)
        global_desc = self.head([f[i] for i in self.mc_stages])
        g = stride16_features(f[3], f[4])
        masks = area_downsample(full_masks, g.shape[-2:])
        labels = label_pool(self.label_proj(g), masks, self.eps)
        p = presence(full_masks)  # exact pixel fractions (unlabelled pixels count for no label)
        return {
            "descriptor": self._compose(global_desc, labels, p),
            "global": global_desc,
            "labels": labels,
            "presence": p,
            "masks": masks,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts(x)["descriptor"]
