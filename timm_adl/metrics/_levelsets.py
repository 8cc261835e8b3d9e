"""Every connected component of every thresholded score map of a batch, from one sweep per map.

The reference protocol thresholds a score map at up to 100 levels and runs OpenCV's contour finder on
each binary image. Those binary images are nested, so one union-find sweep, from the highest level
down (a max-tree), gives the components of every level: after the pieces of level ``L`` are switched on
and joined to their kept neighbours, the live roots are exactly the components kept at query ``L - 1``,
each with its bounding box maintained on union. The pieces are row runs that rise then fall, far fewer
than pixels (see :func:`sweep`). The background sweep (inverted levels, 4-connected) gives the holes:
the components that touch no image border.

Levels: a map is queried at a sorted list of integer thresholds ``t_0 < t_1 < ...`` of its 8-bit values;
a pixel of value ``v`` has *level* ``L = #{t_j < v}`` and is kept at query ``j`` when ``L > j``. Levels fit
a 257-bin counting sort, so a sweep is linear in the pixels plus the components it reports. The loops are
compiled with numba (``cache=True``: compiled once, then loaded from ``__pycache__``); in array code
the same union-find is several times slower.
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
def _counting_sort(levels: np.ndarray, count: int, km: int, order: np.ndarray, start: np.ndarray) -> None:
    """Indices ``0..count-1`` sorted by ``levels`` (in ``[0, km]``) into ``order``; level v at ``start[v]``."""
    start[: km + 2] = 0
    for i in range(count):
        start[levels[i] + 1] += 1
    for v in range(km + 1):
        start[v + 1] += start[v]
    fill = start[: km + 1].copy()
    for i in range(count):
        v = levels[i]
        order[fill[v]] = i
        fill[v] += 1


@numba.njit(cache=True, nogil=True)
def sweep(
    q: np.ndarray, luts: np.ndarray, k: np.ndarray, offset: np.ndarray, foreground: bool, want_quads: bool
):
    """Bounding boxes of the components of every query of every map.

    Works on ``cur``: the levels (foreground) or ``k - level`` (background), kept at step ``j`` when
    ``cur > j``. Each row is cut into *runs* that rise then fall, so the part of a run kept at any level is
    one interval holding the run's peak: runs are the union-find nodes, switched on at their peak level
    and joined along their *passes* (the highest level at which two adjacent pixels of two runs are
    both kept). Row runs give the row extents of a component; column runs (cut the same way along
    the columns) give the column extents: a column run is connected above every level and holds its
    peak, so it joins the row run holding that peak. Holes are the background components not joined to
    the frame (a node the border pixels join at their level).

    Args:
        q: (N, H, W) 8-bit maps.
        luts: (N, 256) level of each 8-bit value, per map.
        k: (N,) number of queries of each map.
        offset: (N + 1,) global id of each map's first query.
        foreground: components of ``level > j`` (8-connected, OpenCV's outer contours); otherwise the
            holes: components of ``level <= j`` (4-connected) that touch no image border.

    Returns:
        ``query`` (C,) int64, non-decreasing, inclusive ``x0 y0 x1 y1`` (C,) int32 extents, and (Q,) the
        number of 2x2 pixel quads all kept at each query (with ``want_quads``, foreground only; else zeros).
    """
    n, h, w = q.shape
    size = h * w
    big = 1 << 30
    cur = np.empty((h, w), dtype=np.int32)
    m3 = np.empty((h, w), dtype=np.int32)
    vpk = np.empty((h, w), dtype=np.int32)
    vpy = np.empty((h, w), dtype=np.int32)
    cpk = np.empty(w, dtype=np.int32)
    cpy = np.empty(w, dtype=np.int32)
    cfall = np.empty(w, dtype=np.int32)
    lut = np.empty(256, dtype=np.int32)
    rid = np.empty((h, w), dtype=np.int32)  # row run of each pixel
    row_first = np.empty(h + 1, dtype=np.int32)  # first row run of each row
    rs = np.empty(size + 1, dtype=np.int32)  # row runs: first and last column, row, peak level
    re = np.empty(size + 1, dtype=np.int32)
    ry = np.empty(size + 1, dtype=np.int32)
    rpv = np.empty(size + 1, dtype=np.int32)
    cx = np.empty(size, dtype=np.int32)  # column runs: column, peak level, row run of the peak
    cv = np.empty(size, dtype=np.int32)
    crun = np.empty(size, dtype=np.int32)
    max_edges = 6 * size + 4 * (h + w) + 16  # runs <= size / 2 + h: edges well under this
    ea = np.empty(max_edges, dtype=np.int32)
    eb = np.empty(max_edges, dtype=np.int32)
    el = np.empty(max_edges, dtype=np.int32)
    run_order = np.empty(size + 1, dtype=np.int32)
    col_order = np.empty(size, dtype=np.int32)
    edge_order = np.empty(max_edges, dtype=np.int32)
    run_start = np.zeros(259, dtype=np.int64)
    col_start = np.zeros(259, dtype=np.int64)
    edge_start = np.zeros(259, dtype=np.int64)
    parent = np.empty(size + 1, dtype=np.int32)
    rank = np.empty(size + 1, dtype=np.int32)
    bx0 = np.empty(size + 1, dtype=np.int32)
    by0 = np.empty(size + 1, dtype=np.int32)
    bx1 = np.empty(size + 1, dtype=np.int32)
    by1 = np.empty(size + 1, dtype=np.int32)
    edge = np.empty(size + 1, dtype=np.bool_)
    active = np.empty(size + 1, dtype=np.int32)
    cap = max(1024, int(offset[n]) * 4)
    oq = np.empty(cap, dtype=np.int64)
    ox0 = np.empty(cap, dtype=np.int32)
    oy0 = np.empty(cap, dtype=np.int32)
    ox1 = np.empty(cap, dtype=np.int32)
    oy1 = np.empty(cap, dtype=np.int32)
    cnt = 0
    quads = np.zeros(int(offset[n]), dtype=np.int64)
    qhist = np.zeros((4, 258), dtype=np.int64)
    colmin = np.empty(w, dtype=np.int32)
    qmin = np.empty(w, dtype=np.int32)
    for m in range(n):
        km = int(k[m])
        for i in range(256):
            lut[i] = luts[m, i] if foreground else km - luts[m, i]
        # row runs (rise, then fall) and the passes between consecutive runs of a row; the levels, and
        # the best of each pixel and its row neighbours (a pixel's neighbours below, for 8-connectivity)
        nr = 0
        ne = 0
        for y in range(h):
            r0 = nr
            row_first[y] = nr
            rs[nr] = 0
            ry[nr] = y
            pk = lut[q[m, y, 0]]
            cur[y, 0] = pk
            falling = False
            rid[y, 0] = nr
            prev = pk
            pprev = pk
            for x in range(1, w):
                a = lut[q[m, y, x]]
                cur[y, x] = a
                m3[y, x - 1] = max(max(pprev, prev), a)
                d = a - prev
                if (d > 0) & falling:  # a valley: a new run starts here
                    re[nr] = x - 1
                    rpv[nr] = pk
                    nr += 1
                    rs[nr] = x
                    ry[nr] = y
                    pk = a
                    falling = False
                falling = falling | (d < 0)
                pk = max(pk, a)
                rid[y, x] = nr
                pprev = prev
                prev = a
            m3[y, w - 1] = max(pprev, prev)
            re[nr] = w - 1
            rpv[nr] = pk
            nr += 1
            for r in range(r0, nr - 1):
                v = min(cur[y, re[r]], cur[y, rs[r + 1]])
                if v > 0:
                    ea[ne] = r
                    eb[ne] = r + 1
                    el[ne] = v
                    ne += 1
        row_first[h] = nr
        # column runs, the same way down the columns, all columns at once (no branch: vectorised);
        # where a run ends, its peak is noted at the next run's first pixel and collected afterwards
        nc = 0
        for x in range(w):
            cpk[x] = cur[0, x]
            cpy[x] = 0
            cfall[x] = 0
        for y in range(1, h):
            for x in range(w):
                a = cur[y, x]
                d = a - cur[y - 1, x]
                valley = np.int32(d > 0) & cfall[x]
                vpk[y, x] = cpk[x]
                vpy[y, x] = cpy[x] if valley else -1
                pk0 = -1 if valley else cpk[x]
                cpy[x] = y if a > pk0 else cpy[x]
                cpk[x] = max(pk0, a)
                cfall[x] = (cfall[x] & (1 - valley)) | np.int32(d < 0)
        for y in range(1, h):
            for x in range(w):
                if vpy[y, x] >= 0:
                    cx[nc] = x
                    cv[nc] = vpk[y, x]
                    crun[nc] = rid[vpy[y, x], x]
                    nc += 1
        for x in range(w):
            cx[nc] = x
            cv[nc] = cpk[x]
            crun[nc] = rid[cpy[x], x]
            nc += 1
        if foreground:  # the best neighbour in the row, within the run: not across runs
            for y in range(h):
                for r in range(row_first[y], row_first[y + 1] - 1):
                    b = re[r]  # the last pixel of a run and the first of the next
                    m3[y, b] = max(cur[y, max(b - 1, rs[r])], cur[y, b])
                    m3[y, b + 1] = max(cur[y, b + 1], cur[y, min(b + 2, re[r + 1])])
        below = m3 if foreground else cur
        # passes between runs of consecutive rows: over each overlap of a run above with one below
        for y in range(h - 1):
            i = row_first[y]
            j = row_first[y + 1]
            i_end = row_first[y + 1]
            j_end = row_first[y + 2]
            while i < i_end and j < j_end:
                lo = max(rs[i], rs[j])
                hi = min(re[i], re[j])
                v = 0
                for x in range(lo, hi + 1):
                    v = max(v, min(cur[y, x], below[y + 1, x]))
                if v > 0:
                    ea[ne] = i
                    eb[ne] = j
                    el[ne] = v
                    ne += 1
                if re[i] < re[j]:
                    i += 1
                elif re[j] < re[i]:
                    j += 1
                else:
                    i += 1
                    j += 1
            if foreground:  # diagonal neighbours across a boundary between two runs below
                for j in range(row_first[y + 1], j_end - 1):
                    x = re[j]
                    u = min(cur[y, x], cur[y + 1, x + 1])
                    if u > 0:
                        ea[ne] = rid[y, x]
                        eb[ne] = j + 1
                        el[ne] = u
                        ne += 1
                    u = min(cur[y, x + 1], cur[y + 1, x])
                    if u > 0:
                        ea[ne] = rid[y, x + 1]
                        eb[ne] = j
                        el[ne] = u
                        ne += 1
        if foreground and want_quads:
            # 2x2 quads of pixels all kept, per query (a lower bound of polygon areas): the quads'
            # minima first (vectorised), then a histogram in four parts (no store-to-load chain)
            qhist[:, : km + 2] = 0
            for y in range(h - 1):
                for x in range(w):
                    colmin[x] = min(cur[y, x], cur[y + 1, x])
                for x in range(w - 1):
                    qmin[x] = min(colmin[x], colmin[x + 1])
                for x in range(w - 1):
                    qhist[x & 3, qmin[x]] += 1
            total = 0
            for j in range(km - 1, -1, -1):  # quads of minimum level >= j + 1
                total += qhist[0, j + 1] + qhist[1, j + 1] + qhist[2, j + 1] + qhist[3, j + 1]
                quads[offset[m] + j] = total
        frame = nr  # the outside of the image (background only), joined by every border pixel
        if not foreground:
            for x in range(w):
                for y in (0, h - 1):
                    if cur[y, x] > 0:
                        ea[ne] = rid[y, x]
                        eb[ne] = frame
                        el[ne] = cur[y, x]
                        ne += 1
            for y in range(h):
                for x in (0, w - 1):
                    if cur[y, x] > 0:
                        ea[ne] = rid[y, x]
                        eb[ne] = frame
                        el[ne] = cur[y, x]
                        ne += 1
        parent[frame] = frame
        rank[frame] = big
        edge[frame] = True
        _counting_sort(rpv, nr, km, run_order, run_start)
        _counting_sort(cv, nc, km, col_order, col_start)
        _counting_sort(el, ne, km, edge_order, edge_start)
        n_act = 0
        seg = cnt
        for step in range(km):
            v = km - step  # pixels with cur >= v are kept at this step
            for t in range(run_start[v], run_start[v + 1]):
                r = run_order[t]
                parent[r] = r
                rank[r] = 0
                bx0[r] = big
                bx1[r] = -big
                by0[r] = ry[r]
                by1[r] = ry[r]
                edge[r] = False
                active[n_act] = r
                n_act += 1
            for t in range(col_start[v], col_start[v + 1]):
                c = col_order[t]
                r = _find(parent, crun[c])
                bx0[r] = min(bx0[r], cx[c])
                bx1[r] = max(bx1[r], cx[c])
            for t in range(edge_start[v], edge_start[v + 1]):
                e = edge_order[t]
                a = _find(parent, ea[e])
                b = _find(parent, eb[e])
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
            # live roots (the background drops those joined to the frame: never holes again)
            if cnt + n_act > cap:
                cap = 2 * (cnt + n_act)
                oq = _grow(oq, cap)
                ox0 = _grow(ox0, cap)
                oy0 = _grow(oy0, cap)
                ox1 = _grow(ox1, cap)
                oy1 = _grow(oy1, cap)
            kept = 0
            qid = offset[m] + (v - 1 if foreground else km - v)
            for t in range(n_act):
                r = active[t]
                if parent[r] != r or edge[r]:
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
    return oq[:cnt], ox0[:cnt], oy0[:cnt], ox1[:cnt], oy1[:cnt], quads


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
