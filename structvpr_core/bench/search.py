"""Map search speed and exactness on SYNTHETIC 448-d descriptors, through ``MapDatabase``.

Data (synthetic, seeded): map keyframes along routes of 1000, the descriptor drifting from one
keyframe to the next (cosine ~0.97 between neighbours, as between consecutive camera
keyframes), plus a component common to all (real descriptors share one: on Corridor any two
frames have cosine > 0.9); queries are revisits: a map keyframe plus noise (cosine ~0.96 to it,
~0.93 to its neighbours, so near-ties are common and an index must resolve them). The exact
top-1 is computed by brute force (``faiss.knn``).

Per index and map size: the p50 / p95 / min of ``MapDatabase.search(one query, k=1)`` and the
top-1 agreement with exact search (the index's best hit is an exact best hit: same id, or an
inner product within 1e-5 of the best). The approximate indexes are swept over their search
parameter (IVF ``nprobe``, HNSW ``efSearch``); the figures at the top level of each size are
the fastest sweep point meeting the agreement target (else the most exact one; ``setting`` says
which), ``map_default`` is the point of MapDatabase's default, ``sweep`` lists all.
``ivfflat`` (faiss ``IndexIVFFlat``: exact inner products, so scores keep their meaning for
``min_score``) is ``build-map``'s default for large maps; its nlist is 4·√N of the whole map
(``ivfflat_nlist`` overrides), trained on >= 40·nlist sampled vectors, see docs/performance.md.
"""

from __future__ import annotations

import time

import numpy as np

DIM = 448
ROUTE_LENGTH = 1000  # keyframes per synthetic route
STEP_CORRELATION = 0.95  # of the route-specific part from one keyframe to the next
COMMON = 0.7  # weight of the component shared by all descriptors
QUERY_NOISE = 0.3  # a revisit: cosine ~0.96 to its keyframe, ~0.93 to the keyframes beside it


def synthetic_descriptors(
    n: int,
    queries: int,
    seed: int = 0,
    dim: int = DIM,
    route: int = ROUTE_LENGTH,
    rho: float = STEP_CORRELATION,
    chunk: int = 100_000,
):
    """(map descriptors (n, dim), query descriptors (queries, dim), source keyframe of each query).

    SYNTHETIC: routes of ``route`` keyframes along which the descriptor drifts as an AR(1)
    process (correlation ``rho`` from one keyframe to the next), plus a component common to all.
    """
    rng = np.random.default_rng(seed)

    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    mean = unit(rng.standard_normal(dim, dtype=np.float32))
    length = max(1, min(route, n))
    routes = -(-n // length)
    raw = np.empty((routes * length, dim), dtype=np.float32)
    scale = np.float32(1.0 / np.sqrt(dim))
    state = rng.standard_normal((routes, dim), dtype=np.float32) * scale
    rows = np.arange(routes) * length
    for t in range(length):
        if t:
            step = rng.standard_normal((routes, dim), dtype=np.float32)
            state = rho * state + np.float32(np.sqrt(1 - rho**2)) * scale * step
        raw[rows + t] = state
    db = raw[:n]
    for start in range(0, n, chunk):
        db[start : start + chunk] = unit(COMMON * mean + db[start : start + chunk])
    src = rng.choice(n, size=queries, replace=queries > n)
    q = unit(db[src] + QUERY_NOISE * unit(rng.standard_normal((queries, dim), dtype=np.float32)))
    return db, np.ascontiguousarray(q, dtype=np.float32), src


def exact_top1(db: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    scores, ids = faiss.knn(q, db, 1, metric=faiss.METRIC_INNER_PRODUCT)
    return scores[:, 0], ids[:, 0]


def _agreement(found_ids: np.ndarray, db: np.ndarray, q: np.ndarray, best_scores: np.ndarray) -> float:
    # An index hit counts when its *exact* inner product equals the best one (ties are fine).
    ok = found_ids >= 0
    exact = np.full(len(q), -np.inf, dtype=np.float32)
    exact[ok] = np.einsum("ij,ij->i", db[found_ids[ok]], q[ok])
    return float(np.mean(exact >= best_scores - 1e-5))


def time_map_search(mapdb, q: np.ndarray) -> tuple[dict, np.ndarray]:
    """Per-query ``MapDatabase.search(k=1)`` times and the hits' positions in the data (id - 1)."""
    from .timing import summarise

    for i in range(min(5, len(q))):
        mapdb.search(q[i : i + 1], 1)  # warm-up
    times, found = [], np.full(len(q), -1, dtype=np.int64)
    for i in range(len(q)):
        t = time.perf_counter()
        hits = mapdb.search(q[i : i + 1], 1)[0]
        times.append(time.perf_counter() - t)
        if hits:
            found[i] = hits[0][0] - 1
    return summarise(times), found


# Per approximate index kind: (name in the JSON sweep rows, MapDatabase parameter name).
SWEEP_PARAM = {"ivfpq": ("nprobe", "nprobe"), "ivfflat": ("nprobe", "nprobe"), "hnsw": ("efSearch", "ef_search")}


def build_map(kind: str, db: np.ndarray, params: dict, train_size: int):
    from ..mapdb import MapDatabase

    fp = {"architecture": "synthetic", "weights_sha256": "synthetic", "input_size": [0, 0], "descriptor_dim": DIM}
    index_params = dict(params)
    if kind in ("ivfpq", "ivfflat"):
        index_params["auto_train_at"] = 0  # trained below on a sample, then filled
    mapdb = MapDatabase.create(fp, DIM, kind, index_params=index_params or None, use_gpu=False)
    started = time.perf_counter()
    if kind in ("ivfpq", "ivfflat"):
        rng = np.random.default_rng(1)
        sample = db[np.sort(rng.choice(len(db), size=min(len(db), train_size), replace=False))]
        mapdb.train(sample)
    step = 100_000
    for start in range(0, len(db), step):
        chunk = db[start : start + step]
        mapdb.add(chunk, [{"source": "synthetic"}] * len(chunk))
    return mapdb, time.perf_counter() - started


def run(cfg: dict) -> dict:
    """One index kind over the configured map sizes (one subprocess per kind: its own peak RSS)."""
    import faiss

    kind = cfg["kind"]
    faiss.omp_set_num_threads(int(cfg["threads"]))
    out: dict = {}
    for n in cfg["sizes"]:
        nq = int(cfg["queries"] if kind != "flat" else min(cfg["queries"], cfg["flat_queries"]))
        db, q, _ = synthetic_descriptors(int(n), nq, seed=int(n))
        best, _ = exact_top1(db, q)
        entry: dict = {"synthetic": True, "queries": nq}
        params, train_size = dict(cfg["params"].get(kind, {})), int(cfg["train_size"])
        if kind == "ivfflat":
            # nlist from the whole map (the training sample is smaller); k-means wants >= 39
            # training points per centroid (faiss warns below), so the sample is >= 40·nlist.
            nlist = int(cfg["ivfflat_nlist"] or max(1, min(int(4 * np.sqrt(n)), n // 39)))
            params["nlist"] = nlist
            train_size = max(train_size, 40 * nlist)
        mapdb, build_s = build_map(kind, db, params, train_size)
        entry.update(build_s=build_s, params=mapdb.index_params)
        if kind == "flat":
            stats, found = time_map_search(mapdb, q)
            chosen = {**stats, "top1_agreement": _agreement(found, db, q, best)}
        else:
            name, param = SWEEP_PARAM[kind]
            default = int(mapdb.index_params[param])
            cap = int(mapdb.index_params.get("nlist") or 0) or None  # nprobe > nlist = nlist
            entry["sweep"] = []
            for value in sorted({min(int(v), cap or int(v)) for v in [*cfg["sweep"][kind], default]}):
                mapdb.set_search_params(**{param: value})
                stats, found = time_map_search(mapdb, q)
                row = {name: value, **stats, "top1_agreement": _agreement(found, db, q, best)}
                entry["sweep"].append(row)
                if value == min(default, cap or default):
                    entry["map_default"] = row
            chosen = _choose(entry["sweep"], cfg)
        mapdb.close()
        entry.update({k: v for k, v in chosen.items() if k not in entry})
        out[str(int(n))] = entry
        del db, q
    return out


def _choose(sweep: list[dict], cfg: dict) -> dict:
    """The fastest sweep point meeting the agreement target, else the most exact one."""
    target = float(cfg["agreement_target"])
    good = [r for r in sweep if r["top1_agreement"] >= target]
    best = min(good, key=lambda r: r["p50_ms"]) if good else max(sweep, key=lambda r: r["top1_agreement"])
    return dict(best, setting="fastest meeting the agreement target" if good else "most exact of the sweep")
