"""PyTorch inference of the RGB branch or the StructVPR++ student (which also gives masks):
BatchNorm folded, channels_last on the CPU, half on CUDA."""

from __future__ import annotations

import numpy as np

from ..preprocess import IMAGENET_MEAN, IMAGENET_STD


class TorchRunner:
    """Runs (N, H, W, 3) uint8 BGR batches through ``model`` on ``device`` (the contract of ``runner.py``).

    ``channels_last``: measured ~20 % less CPU time per 640×480 image than the default layout
    (with BatchNorm folded, ~25 % more): the Extractor uses it on the CPU by default.
    ``fuse``: fold BatchNorm into the convolutions (off only to measure plain eager PyTorch).
    """

    def __init__(self, model, device, *, half: bool = False, channels_last: bool = False, fuse: bool = True) -> None:
        import torch

        from ..devices import as_torch_device
        from ..models.fusion import fuse_conv_bn

        device = as_torch_device(device)
        self.device = device
        self.half = bool(half)
        self.channels_last = bool(channels_last)
        model = (fuse_conv_bn(model.eval()) if fuse else model.eval()).to(device)
        if self.half:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._dtype = torch.float16 if self.half else torch.float32
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255.0
        # A StructVPR++ student also gives soft label masks (``run_masks``); 0 for plain StructVPR.
        self.mask_channels = int(getattr(model, "clusters", 0)) if hasattr(model, "masks") else 0

    def _input(self, batch: np.ndarray):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        # uint8 travels to the GPU, not float; the BGR -> RGB swap happens there too.
        x = x.permute(0, 3, 1, 2).flip(1).float()
        x = ((x - self._mean) / self._std).to(self._dtype)  # normalise in float32, then cast
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR -> (N, D) float32 L2-normalised descriptors."""
        import torch

        with torch.inference_mode():
            x = self._input(batch)
            # On the CPU one image per forward pass is fastest: at 640×480 a batch's activations
            # overflow the caches (measured: 8 images cost ~2× the CPU time per image of 1).
            step = 1 if self.device.type == "cpu" else len(x)
            desc = torch.cat([self.model(x[i : i + step]) for i in range(0, len(x), step)]).float()
            # Renormalise in float32: half-precision outputs are only approximately unit length.
            desc = torch.nn.functional.normalize(desc, dim=1)
        return desc.cpu().numpy().astype(np.float32, copy=False)

    def run_masks(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR -> (N, C, H/16, W/16) float32 soft label masks (StructVPR++ only)."""
        import torch

        if not self.mask_channels:
            raise ValueError("this model has no label masks")
        with torch.inference_mode():
            x = self._input(batch)
            masks = torch.cat([self.model.masks(x[i : i + 1]) for i in range(len(x))]).float()
        return masks.cpu().numpy()
