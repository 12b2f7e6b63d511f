"""Exact k-nearest neighbours by blocks: memory O(N*k + block^2), never a dense N x N matrix."""

from __future__ import annotations

import torch


def chunked_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    max_dist: float | None = None,
    block_q: int = 4096,
    block_k: int = 16384,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query row, the k nearest key rows by L2 distance, ascending.

    queries (Nq, d), keys (Nk, d) on any device. Returns idx (Nq, k) int32 and dist (Nq, k) float32 on the
    CPU. Slots without a candidate (fewer than k keys, or farther than `max_dist`) hold idx -1, dist inf.
    """
    n_q, n_k = len(queries), len(keys)
    idx_out = torch.full((n_q, k), -1, dtype=torch.int32)
    dist_out = torch.full((n_q, k), float("inf"), dtype=torch.float32)
    if n_q == 0 or n_k == 0 or k == 0:
        return idx_out, dist_out
    for q0 in range(0, n_q, block_q):
        q = queries[q0 : q0 + block_q]
        best_d = torch.full((len(q), k), float("inf"), device=q.device)
        best_i = torch.full((len(q), k), -1, dtype=torch.int64, device=q.device)
        for k0 in range(0, n_k, block_k):
            d = torch.cdist(q, keys[k0 : k0 + block_k])
            kk = min(k, d.shape[1])
            d_top, i_top = torch.topk(d, kk, dim=1, largest=False)
            # Merge this block's best with the running best; ties keep the earlier key (stable order).
            cand_d = torch.cat([best_d, d_top], dim=1)
            cand_i = torch.cat([best_i, i_top + k0], dim=1)
            order = torch.argsort(cand_d, dim=1, stable=True)[:, :k]
            best_d = torch.gather(cand_d, 1, order)
            best_i = torch.gather(cand_i, 1, order)
        if max_dist is not None:
            far = best_d > max_dist
            best_d = best_d.masked_fill(far, float("inf"))
            best_i = best_i.masked_fill(far, -1)
        idx_out[q0 : q0 + len(q)] = best_i.to("cpu", torch.int32)
        dist_out[q0 : q0 + len(q)] = best_d.to("cpu", torch.float32)
    return idx_out, dist_out


def dense_topk(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline the index replaces: the full Nq x Nk distance matrix, then top-k (benchmarks only)."""
    d = torch.cdist(queries, keys)
    dist, idx = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
    return idx.to(torch.int32), dist


def masked_topk(
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_ok: torch.Tensor,
    key_ok: torch.Tensor,
    k: int,
    max_dist: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """chunked_topk over the keys with `key_ok` only, for the queries with `query_ok` only (boolean (N,)):
    a left-out key is never a candidate, a left-out query has none (idx -1, dist inf). Indices are rows of
    `keys`."""
    idx = torch.full((len(queries), k), -1, dtype=torch.int32)
    dist = torch.full((len(queries), k), float("inf"), dtype=torch.float32)
    key_rows = torch.nonzero(key_ok.cpu()).flatten().to(torch.int32)
    found_idx, found_dist = chunked_topk(queries[query_ok], keys[key_ok], k, max_dist)
    found = found_idx >= 0
    found_idx[found] = key_rows[found_idx[found].long()]
    rows = query_ok.cpu()
    idx[rows], dist[rows] = found_idx, found_dist
    return idx, dist
