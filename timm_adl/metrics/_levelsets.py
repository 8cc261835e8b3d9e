"""Every connected component of every thresholded score map of a batch, from one sweep per map.

The reference protocol thresholds a score map at up to 100 levels and runs OpenCV's contour finder on
each binary image. Those binary images are nested, so one union-find sweep over the pixels, added from
the highest level down (a max-tree), gives the components of every level: after the pixels of level
``L`` are added and joined to their kept neighbours, the live roots are exactly the components kept at
query ``L - 1``, each with its bounding box maintained on union. The background sweep (pixels added
from the lowest level up, 4-connected) gives the holes: the components that touch no image border.

Levels: a map is queried at a sorted list of integer thresholds ``t_0 < t_1 < ...`` of its 8-bit values;
a pixel of value ``v`` has *level* ``L = #{t_j < v}`` and is kept at query ``j`` when ``L > j``. Levels fit
a 256-bin counting sort, so a sweep is linear in the pixels plus the components it reports. The loops are
compiled with numba (cached on disk): a per-pixel union-find in plain array code would be far slower.
Nothing is approximate: the tests compare the boxes with OpenCV's on many maps.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def quantise(maps: np.ndarray) -> np.ndarray:
    """The reference's ``(map * 255).astype(uint8)``, in float64 (truncation), for an (N, H, W) batch."""
    n, h, w = maps.shape
    out = np.empty((n, h, w), dtype=np.uint8)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                out[i, y, x] = np.uint8(np.float64(maps[i, y, x]) * 255.0)
    return out


@numba.njit(cache=True, nogil=True)
def apply_luts(q: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """(N, H, W) int16 levels: ``luts[i, q[i, y, x]]``."""
    n, h, w = q.shape
    out = np.empty((n, h, w), dtype=np.int16)
    for i in range(n):
        for y in range(h):
            for x in range(w):
                out[i, y, x] = luts[i, q[i, y, x]]
    return out


@numba.njit(cache=True, nogil=True, inline='always')
def _find(parent: np.ndarray, p: int) -> int:
    r = p
    while parent[r] != r:
        r = parent[r]
    while parent[p] != r:  # path compression
        nxt = parent[p]
        parent[p] = r
        p = nxt
    return r


@numba.njit(cache=True, nogil=True)
def _grow(a: np.ndarray, cap: int) -> np.ndarray:
    out = np.empty(cap, dtype=a.dtype)
    out[: a.size] = a
    return out


@numba.njit(cache=True, nogil=True)
def sweep(lev: np.ndarray, k: np.ndarray, offset: np.ndarray, foreground: bool):
    """Bounding boxes of the components of every query of every map.

    Args:
        lev: (N, H, W) int16 levels.
        k: (N,) number of queries of each map.
        offset: (N + 1,) global id of each map's first query.
        foreground: components of ``level > j`` (8-connected, OpenCV's outer contours); otherwise the
            holes: components of ``level <= j`` (4-connected) that touch no image border.

    Returns:
        ``query`` (C,) int64, non-decreasing, and inclusive ``x0 y0 x1 y1`` (C,) int32 extents.
    """
    n, h, w = lev.shape
    size = h * w
    parent = np.empty(size, dtype=np.int32)
    rank = np.empty(size, dtype=np.int32)
    bx0 = np.empty(size, dtype=np.int32)
    by0 = np.empty(size, dtype=np.int32)
    bx1 = np.empty(size, dtype=np.int32)
    by1 = np.empty(size, dtype=np.int32)
    edge = np.empty(size, dtype=np.bool_)
    active = np.empty(size, dtype=np.int32)
    order = np.empty(size, dtype=np.int32)
    hist = np.zeros(258, dtype=np.int64)
    start = np.zeros(259, dtype=np.int64)
    cap = max(1024, int(offset[n]) * 4)
    oq = np.empty(cap, dtype=np.int64)
    ox0 = np.empty(cap, dtype=np.int32)
    oy0 = np.empty(cap, dtype=np.int32)
    ox1 = np.empty(cap, dtype=np.int32)
    oy1 = np.empty(cap, dtype=np.int32)
    cnt = 0
    if foreground:
        dys = np.array([-1, -1, -1, 0, 0, 1, 1, 1])
        dxs = np.array([-1, 0, 1, -1, 1, -1, 0, 1])
    else:
        dys = np.array([-1, 0, 0, 1])
        dxs = np.array([0, -1, 1, 0])
    n_nb = dys.size
    for m in range(n):
        km = int(k[m])
        flat = lev[m].ravel()
        hist[: km + 2] = 0
        for p in range(size):
            hist[flat[p]] += 1
        start[0] = 0
        for v in range(km + 1):
            start[v + 1] = start[v] + hist[v]
        for v in range(km + 1):
            hist[v] = start[v]
        for p in range(size):  # counting sort by level
            v = flat[p]
            order[hist[v]] = p
            hist[v] += 1
        parent[:] = -1
        n_act = 0
        seg = cnt
        for step in range(km):
            v = km - step if foreground else step  # level added at this step
            j = v - 1 if foreground else v  # query answered after it
            for t in range(start[v], start[v + 1]):
                p = order[t]
                y = p // w
                x = p - y * w
                parent[p] = p
                rank[p] = 0
                bx0[p] = x
                bx1[p] = x
                by0[p] = y
                by1[p] = y
                edge[p] = y == 0 or x == 0 or y == h - 1 or x == w - 1
                active[n_act] = p
                n_act += 1
            for t in range(start[v], start[v + 1]):
                p = order[t]
                y = p // w
                x = p - y * w
                for d in range(n_nb):
                    yy = y + dys[d]
                    xx = x + dxs[d]
                    if yy < 0 or yy >= h or xx < 0 or xx >= w:
                        continue
                    q = yy * w + xx
                    if parent[q] < 0:
                        continue
                    a = _find(parent, p)
                    b = _find(parent, q)
                    if a == b:
                        continue
                    if rank[a] < rank[b]:
                        a, b = b, a
                    parent[b] = a
                    if rank[a] == rank[b]:
                        rank[a] += 1
                    bx0[a] = min(bx0[a], bx0[b])
                    by0[a] = min(by0[a], by0[b])
                    bx1[a] = max(bx1[a], bx1[b])
                    by1[a] = max(by1[a], by1[b])
                    edge[a] = edge[a] or edge[b]
            # live roots (the background drops those on the border: never holes again)
            if cnt + n_act > cap:
                cap = 2 * (cnt + n_act)
                oq = _grow(oq, cap)
                ox0 = _grow(ox0, cap)
                oy0 = _grow(oy0, cap)
                ox1 = _grow(ox1, cap)
                oy1 = _grow(oy1, cap)
            kept = 0
            qid = offset[m] + j
            for t in range(n_act):
                r = active[t]
                if parent[r] != r or (not foreground and edge[r]):
                    continue
                active[kept] = r
                kept += 1
                oq[cnt] = qid
                ox0[cnt] = bx0[r]
                oy0[cnt] = by0[r]
                ox1[cnt] = bx1[r]
                oy1[cnt] = by1[r]
                cnt += 1
            n_act = kept
        if foreground and cnt > seg + 1:  # emitted from the top query down: reverse the query groups
            _reverse_groups(oq, ox0, oy0, ox1, oy1, seg, cnt)
    return oq[:cnt], ox0[:cnt], oy0[:cnt], ox1[:cnt], oy1[:cnt]


@numba.njit(cache=True, nogil=True)
def _reverse_groups(oq, ox0, oy0, ox1, oy1, lo: int, hi: int) -> None:
    """Reorder ``[lo, hi)``, grouped by query in decreasing order, into increasing query order."""
    tq = oq[lo:hi].copy()
    t0 = ox0[lo:hi].copy()
    t1 = oy0[lo:hi].copy()
    t2 = ox1[lo:hi].copy()
    t3 = oy1[lo:hi].copy()
    out = lo
    end = tq.size
    while end > 0:
        begin = end - 1
        while begin > 0 and tq[begin - 1] == tq[end - 1]:
            begin -= 1
        for i in range(begin, end):
            oq[out] = tq[i]
            ox0[out] = t0[i]
            oy0[out] = t1[i]
            ox1[out] = t2[i]
            oy1[out] = t3[i]
            out += 1
        end = begin


@numba.njit(cache=True, nogil=True)
def quad_counts(lev: np.ndarray, k: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """(Q,) number of 2x2 pixel quads whose four pixels are all kept, per query of every map."""
    n, h, w = lev.shape
    out = np.zeros(int(offset[n]), dtype=np.int64)
    hist = np.zeros(258, dtype=np.int64)
    for m in range(n):
        km = int(k[m])
        hist[: km + 2] = 0
        for y in range(h - 1):
            for x in range(w - 1):
                v = min(min(lev[m, y, x], lev[m, y, x + 1]), min(lev[m, y + 1, x], lev[m, y + 1, x + 1]))
                hist[v] += 1
        total = 0
        for j in range(km - 1, -1, -1):  # quads of minimum level >= j + 1
            total += hist[j + 1]
            out[offset[m] + j] = total
    return out
