"""Searches beyond a faiss GPU index's k limit run on the CPU index instead of failing (mapdb/search.py).

No GPU here: ``KLimitedIndex`` is a MOCK of the one GPU behaviour that matters, a faiss GPU index
refusing k above its selection limit; it searches a real faiss CPU index below that limit.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from structvpr_core.mapdb.search import gpu_max_k, search_batched, search_filtered


class KLimitedIndex:
    """MOCK of a faiss GPU index's k limit (faiss raises for k > GPU_MAX_SELECTION_K)."""

    def __init__(self, index, max_k: int):
        self.index, self.max_k, self.calls = index, max_k, []

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def search(self, q, k, params=None):
        assert params is None, "GPU indexes take no search parameters"
        self.calls.append(k)
        if k > self.max_k:
            raise RuntimeError(f"Error: 'k > 0 && k <= GPU_MAX_SELECTION_K' failed (k={k})")
        return self.index.search(q, k)


@pytest.fixture()
def cpu_index():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(16)
    index.add(x)
    return index, x


def test_a_batched_search_beyond_the_limit_runs_on_the_fallback_with_the_same_answer(cpu_index):
    index, x = cpu_index
    gpu = KLimitedIndex(index, max_k=32)
    expected = search_batched(index, x[:3], 100, -1.0)
    got = search_batched(gpu, x[:3], 100, -1.0, max_k=32, fallback=index)
    assert got == expected and len(got[0]) == 100
    assert gpu.calls == []  # never asked the "GPU" for more than it can give
    assert search_batched(gpu, x[:3], 10, -1.0, max_k=32, fallback=index) == search_batched(index, x[:3], 10, -1.0)
    assert gpu.calls == [10]  # within the limit: the GPU index answers


def test_over_fetching_switches_to_the_fallback_once_the_fetch_passes_the_limit(cpu_index):
    index, x = cpu_index
    gpu = KLimitedIndex(index, max_k=40)

    def not_every_seventh(i: int) -> bool:
        return i % 7 != 0  # keeps every 7th id: the search must fetch far more than 2k + 16

    expected = search_filtered(index, x[:2], 10, -1.0, not_every_seventh)
    got = search_filtered(gpu, x[:2], 10, -1.0, not_every_seventh, max_k=40, fallback=index)
    assert got == expected
    assert all(len(h) == 10 and all(i % 7 == 0 for i, _ in h) for h in got)
    assert gpu.calls == [36, 36]  # the first fetch (2k + 16) per query on the "GPU", the larger ones not


def test_without_a_fallback_the_limit_is_a_clear_error(cpu_index):
    index, x = cpu_index
    with pytest.raises(ValueError, match="exceeds the index's limit 8"):
        search_batched(KLimitedIndex(index, 8), x[:1], 9, -1.0, max_k=8)


def test_the_gpu_limit_is_faiss_own_figure_or_the_cuda_default():
    assert gpu_max_k() >= 1024
