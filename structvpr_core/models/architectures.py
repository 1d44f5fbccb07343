"""The architecture names a checkpoint or an export records, and their default descriptor sizes (no torch).

Kept apart from the networks so that what runs an exported model (the extractor's checks, the
map, the node) can name and size architectures without PyTorch. The classes carry the same
values (``RGBBranch.architecture``, ``.dim``, ...); test_runtime_without_torch checks they agree.
"""

from __future__ import annotations

RGB_ARCHITECTURE = "structvpr-rgb-mobilenetv2"
SEG_ARCHITECTURE = "structvpr-seg-mobilenetl"
PP_RGB_ARCHITECTURE = "structvpr-pp-rgb-mobilenetv2"
PP_SEG_ARCHITECTURE = "structvpr-pp-seg-mobilenetl"
# With the default model arguments (the ++ label part: C = 6 clusters of d_l = 64); MC over F3..F5.
DIMS = {
    RGB_ARCHITECTURE: 32 + 96 + 320,
    SEG_ARCHITECTURE: 64 + 96 + 320,
    PP_RGB_ARCHITECTURE: 32 + 96 + 320 + 6 * 64,
    PP_SEG_ARCHITECTURE: 64 + 96 + 320 + 6 * 64,
}
# The architectures that take RGB images: what the Extractor, the exports and the node run.
RGB_ARCHITECTURES = (RGB_ARCHITECTURE, PP_RGB_ARCHITECTURE)
