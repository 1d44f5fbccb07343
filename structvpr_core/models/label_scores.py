"""StructVPR++ descriptors taken apart and re-scored label by label, in numpy (no torch).

What the loop-closure detector needs at run time for a StructVPR++ student (its exported ONNX
model included): kept apart from ``label_features`` (the torch side: pooling, presence, the
descriptor's composition) so that a runtime-only install without PyTorch can use it. The
formulas are in ``label_features``' docstring.
"""

from __future__ import annotations


def split_descriptor(z, global_dim: int, clusters: int, label_dim: int):
    """The parts of StructVPR++ descriptors, recovered from the vectors alone (numpy).

    From z (N, D) with D = global_dim + C·d_l: (x_g (N, global_dim) unit, l (N, C, d_l) unit rows
    or zero, s (N, C) = √λ·w_c·p̂_c). Exact because x_g and every l_c are unit vectors: the norm of
    z's global part is 1/‖u‖ and that of its label part c is s_c/‖u‖. A label with s_c = 0 (a zero
    weight, e.g. dynamic) has no recoverable feature and gets a zero l_c.
    """
    import numpy as np

    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    if z.shape[1] != global_dim + clusters * label_dim:
        raise ValueError(f"descriptors have {z.shape[1]} dimensions, the layout {global_dim} + {clusters}·{label_dim}")
    g = z[:, :global_dim]
    g_norm = np.maximum(np.linalg.norm(g, axis=1), 1e-12)
    parts = z[:, global_dim:].reshape(len(z), clusters, label_dim)
    p_norm = np.linalg.norm(parts, axis=2)
    labels = np.where(p_norm[..., None] > 1e-9, parts / np.maximum(p_norm, 1e-12)[..., None], 0.0)
    return g / g_norm[:, None], labels, p_norm / g_norm[:, None]


def aligned_scores(query, candidates, global_dim: int, clusters: int, label_dim: int):
    """Label-aware re-scoring of candidates (K, D) for one query (D,): a non-factorisable alignment (ours).

    score = (cos(x_q, x_k) + Σ_c m_c cos(l_c^q, l_c^k)) / (1 + Σ_c m_c), m_c = min(s_c^q, s_c^k)²:
    a label counts only as much as the image that shows it less (the descriptor's inner product
    weights it by the product instead). In [-1, 1]; C cosines per pair.
    """
    import numpy as np

    xq, lq, sq = split_descriptor(query, global_dim, clusters, label_dim)
    xk, lk, sk = split_descriptor(candidates, global_dim, clusters, label_dim)
    m = np.minimum(sq, sk) ** 2  # (K, C)
    cos_l = np.einsum("cd,kcd->kc", lq[0], lk)
    return ((xk @ xq[0]) + (m * cos_l).sum(axis=1)) / (1.0 + m.sum(axis=1))
