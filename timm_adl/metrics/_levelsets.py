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
For the largest-contour variant the sweep also picks, among several components, the one whose outer
contour has the largest polygon area (:func:`_pick_largest`), from bounds or from areas read off the
runs, so OpenCV is left only the rare ties. Nothing is approximate: the tests compare the boxes with
OpenCV's on many maps.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def quantise(maps: np.ndarray) -> tuple[np.ndarray, bool]:
    """The reference's ``(map * 255).astype(uint8)``, in float64 (truncation), for an (N, H, W) batch, and
    whether every value was in [0, 1] (False for NaN): the range check rides on the same pass."""
    n, h, w = maps.shape
    out = np.empty((n, h, w), dtype=np.uint8)
    in_range = True
    for i in range(n):
        for y in range(h):
            for x in range(w):
                v = np.float64(maps[i, y, x])
                ok = (v >= 0.0) & (v <= 1.0)  # False for NaN
                in_range &= ok
                out[i, y, x] = np.uint8((v if ok else 0.0) * 255.0)
    return out, in_range


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
        ``query`` (C,) int64, non-decreasing, and inclusive ``x0 y0 x1 y1`` (C,) int32 extents; with
        ``want_quads`` (foreground only: the 2x2 quads all kept bound polygon areas), for queries of
        several components (:func:`_pick_largest`), (Q,) whether the one of largest contour area was
        found, and (Q, 4) its extents, or else the extents of the candidates for it.
    """
    n, h, w = q.shape
    size = h * w
    big = 1 << 30
    cur = np.empty((h, w), dtype=np.int16)
    m3 = np.empty((h, w), dtype=np.int16)
    vpy = np.empty((h, w), dtype=np.int16)
    cpy = np.empty(w, dtype=np.int16)
    cfall = np.empty(w, dtype=np.int16)
    lut = np.empty(256, dtype=np.int16)
    rid = np.empty((h, w), dtype=np.int32)  # row run of each pixel
    row_first = np.empty(h + 1, dtype=np.int32)  # first row run of each row
    rs = np.empty(size + 1, dtype=np.int32)  # row runs: first and last column, row, peak level
    re = np.empty(size + 1, dtype=np.int32)
    ry = np.empty(size + 1, dtype=np.int32)
    rpv = np.empty(size + 1, dtype=np.int32)
    rpx = np.empty(size + 1, dtype=np.int32)  # a column of a run's peak (its last)
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
    decided = np.zeros(int(offset[n]), dtype=np.bool_)  # queries of several components: largest found
    wbox = np.zeros((int(offset[n]), 4), dtype=np.int32)
    per_root = size + 1 if want_quads else 1  # set for the live roots where used
    area2 = np.empty(per_root, dtype=np.int64)  # per root: twice the polygon area, intervals, pairs
    n_int = np.empty(per_root, dtype=np.int64)
    n_adj = np.empty(per_root, dtype=np.int64)
    ia = np.empty(2 * (w + 1), dtype=np.int32)  # maximal kept intervals of two consecutive rows
    ib = np.empty(2 * (w + 1), dtype=np.int32)
    ir = np.empty(2 * (w + 1), dtype=np.int32)
    qhist = np.zeros((4, 258), dtype=np.int64)
    colmin = np.empty(w, dtype=np.int16)
    qmin = np.empty(w, dtype=np.int16)
    for m in range(n):
        km = int(k[m])
        for i in range(256):
            lut[i] = luts[m, i] if foreground else km - luts[m, i]
        # the levels, row runs (rise, then fall) and the passes between consecutive runs of a row
        nr = 0
        ne = 0
        for y in range(h):
            r0 = nr
            row_first[y] = nr
            rs[nr] = 0
            ry[nr] = y
            prev = lut[q[m, y, 0]]
            cur[y, 0] = prev
            falling = False
            rid[y, 0] = nr
            for x in range(1, w):  # both branches are rare: no per-pixel dependency but prev's
                a = lut[q[m, y, x]]
                cur[y, x] = a
                d = a - prev
                if (d < 0) & ~falling:  # the first fall: the peak is the pixel before
                    rpv[nr] = prev
                    rpx[nr] = x - 1
                    falling = True
                elif (d > 0) & falling:  # a valley: a new run starts here
                    re[nr] = x - 1
                    nr += 1
                    rs[nr] = x
                    ry[nr] = y
                    falling = False
                rid[y, x] = nr
                prev = a
            if not falling:  # still rising at the border: the peak is the last pixel
                rpv[nr] = prev
                rpx[nr] = w - 1
            re[nr] = w - 1
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
            cpy[x] = 0
            cfall[x] = 0
        none = np.int16(-1)
        for y in range(1, h):  # as for the rows, a run's peak is the pixel before its first fall
            ends = np.int16(0)
            above = np.int16(y - 1)
            for x in range(w):  # in 16 bits throughout, so that it runs in the widest vectors
                a = cur[y, x]
                b = cur[y - 1, x]
                fell = cfall[x]
                down = np.int16(a < b)
                valley = np.int16(a > b) & fell
                vpy[y, x] = cpy[x] if valley else none
                cpy[x] = above if down > fell else cpy[x]
                cfall[x] = (fell & ~valley) | down
                ends += valley
            x = 0
            while ends > 0:  # the few runs that end on this row (most rows: none or a couple)
                if vpy[y, x] >= 0:
                    cx[nc] = x
                    cv[nc] = cur[vpy[y, x], x]
                    crun[nc] = rid[vpy[y, x], x]
                    nc += 1
                    ends -= 1
                x += 1
        for x in range(w):  # the last run of each column: still rising at the border, its peak is there
            py = cpy[x] if cfall[x] else h - 1
            cx[nc] = x
            cv[nc] = cur[py, x]
            crun[nc] = rid[py, x]
            nc += 1
        if foreground:  # the best of each pixel and its row neighbours, then within its run only
            for y in range(h):
                m3[y, 0] = max(cur[y, 0], cur[y, min(1, w - 1)])
                m3[y, w - 1] = max(cur[y, w - 1], cur[y, max(w - 2, 0)])
                for x in range(1, w - 1):
                    m3[y, x] = max(max(cur[y, x - 1], cur[y, x]), cur[y, x + 1])
            for y in range(h):
                for r in range(row_first[y], row_first[y + 1] - 1):
                    b = re[r]  # the last pixel of a run and the first of the next
                    m3[y, b] = max(cur[y, max(b - 1, rs[r])], cur[y, b])
                    m3[y, b + 1] = max(cur[y, b + 1], cur[y, min(b + 2, re[r + 1])])
        below = m3 if foreground else cur
        # passes between runs of consecutive rows: over each overlap of a run above with one below
        for y in range(h - 1):
            top = cur[y]
            bot = below[y + 1]
            i = row_first[y]
            j = row_first[y + 1]
            i_end = row_first[y + 1]
            j_end = row_first[y + 2]
            while i < i_end and j < j_end:
                lo = max(rs[i], rs[j])
                hi = min(re[i], re[j])
                p = min(max(rpx[i], lo), hi)
                v = _pass_level(top, bot, lo, hi, p, min(max(rpx[j], lo), hi))
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
            if want_quads and kept > 1:
                decided[qid] = _pick_largest(
                    cur, v, int(quads[qid]), active, kept, parent, bx0, by0, bx1, by1, h, w,
                    row_first, rs, re, rpx, rpv, area2, n_int, n_adj, ia, ib, ir, wbox[qid],
                )  # fmt: skip
        if foreground and cnt > seg + 1:  # emitted from the top query down: reverse the query groups
            _reverse_groups(oq, ox0, oy0, ox1, oy1, seg, cnt)
    return oq[:cnt], ox0[:cnt], oy0[:cnt], ox1[:cnt], oy1[:cnt], decided, wbox


@numba.njit(cache=True, nogil=True, inline='always')
def _pass_level(top: np.ndarray, bot: np.ndarray, lo: int, hi: int, p: int, q: int) -> int:
    """``max(min(top[x], bot[x]) for x in [lo, hi])`` where ``top`` rises to ``p`` then falls and ``bot``
    rises to ``q`` then falls, in O(log) instead of a scan (the scans cost a quarter of a sweep).

    Below ``min(p, q)`` both rise and above ``max(p, q)`` both fall, so the maximum there is at those two
    ends; between them one falls while the other rises, so their minimum is the rising one up to the
    first column ``c`` where the falling one is not above it, then the falling one: its maximum is at
    ``c - 1`` or ``c``, and ``c`` is found by bisection.
    """
    a = min(p, q)
    b = max(p, q)
    fall = top if p <= q else bot
    rise = bot if p <= q else top
    left = a
    right = b + 1
    while left < right:  # the first column of [a, b] where fall <= rise, or b + 1
        mid = (left + right) >> 1
        met = fall[mid] <= rise[mid]
        right = mid if met else right
        left = left if met else mid + 1
    v = max(min(top[a], bot[a]), min(top[b], bot[b]))
    if left <= b:
        v = max(v, min(top[left], bot[left]))
    if left > a:
        v = max(v, min(top[left - 1], bot[left - 1]))
    return v


@numba.njit(cache=True, nogil=True, inline='always')
def _kept_interval(cur: np.ndarray, y: int, start: int, peak: int, end: int, v: int) -> tuple[int, int]:
    """The columns of a run of row ``y`` (rising to ``peak``, then falling) whose level is at least ``v``."""
    lo, hi = start, peak
    while lo < hi:  # the first column of the rising part at v or above
        mid = (lo + hi) >> 1
        if cur[y, mid] >= v:
            hi = mid
        else:
            lo = mid + 1
    first = lo
    lo, hi = peak, end
    while lo < hi:  # the last column of the falling part at v or above
        mid = (lo + hi + 1) >> 1
        if cur[y, mid] >= v:
            lo = mid
        else:
            hi = mid - 1
    return first, lo


@numba.njit(cache=True, nogil=True)
def _areas(cur, v, y0, y1, w, row_first, rs, re, rpx, rpv, parent, area2, n_int, n_adj, ia, ib, ir) -> None:
    """Per component kept at level ``v``: twice its polygon area, its row intervals and their contacts.

    OpenCV's outer contour runs through the centres of a component's border pixels; without holes
    it encloses every 2x2 quad of its pixels and half of every quad of three, so between two rows the
    area of two overlapping maximal intervals ``[a, b]``, ``[a', b']`` is ``(min(b, b') - max(a, a')``
    full quads plus a half quad at each end where they differ. A hole would add its own area, so the
    Euler number, intervals less 8-adjacent pairs of intervals of consecutive rows, tells whether
    the area is exact (1: no hole) or a lower bound. Only rows ``y0..y1`` are read: the figures are
    complete for the components within them.
    """
    half = w + 1
    prev_n = 0
    for y in range(y0, y1 + 1):
        base = (y & 1) * half
        n = 0
        last = -2
        for r in range(row_first[y], row_first[y + 1]):
            if rpv[r] < v:
                continue
            a = rs[r]
            b = re[r]
            if cur[y, a] < v or cur[y, b] < v:  # not kept whole
                a, b = _kept_interval(cur, y, a, rpx[r], b, v)
            if last == r - 1 and ib[base + n - 1] + 1 == a:  # touches the run before: one interval
                ib[base + n - 1] = b
            else:
                ia[base + n] = a
                ib[base + n] = b
                ir[base + n] = _find(parent, r)
                n_int[ir[base + n]] += 1
                n += 1
            last = r
        if y > y0:
            pbase = half - base
            i = 0
            j = 0
            while i < prev_n and j < n:
                pa, pb, ca, cb = ia[pbase + i], ib[pbase + i], ia[base + j], ib[base + j]
                if ca <= pb + 1 and pa <= cb + 1:  # 8-adjacent: the same component
                    root = ir[base + j]
                    n_adj[root] += 1
                    lo = max(pa, ca)
                    hi = min(pb, cb)
                    if lo <= hi:
                        area2[root] += 2 * (hi - lo) + (pa != ca) + (pb != cb)
                if pb < cb:
                    i += 1
                else:
                    j += 1
        prev_n = n


@numba.njit(cache=True, nogil=True)
def _pick_largest(
    cur, v, quads, active, kept, parent, bx0, by0, bx1, by1, h, w,
    row_first, rs, re, rpx, rpv, area2, n_int, n_adj, ia, ib, ir, box,
) -> bool:  # fmt: skip
    """Whether the live root whose outer contour has the largest polygon area is found; its extents go
    to ``box``, or else (OpenCV decides) the extents of the candidates for it.

    First with bounds that cost nothing (the leader by box area wins when the quads all kept, less
    the other boxes, still exceed every other box); then with the areas of :func:`_areas`. A tie, or
    a hole that leaves the order open, is left to OpenCV (its contour order breaks ties). The
    candidates are the components whose box can hold the leader's lower bound: any other has a
    polygon inside its own box, smaller than the winner's, so OpenCV may look at their box alone.
    """
    total = 0
    best = -1
    second = -1
    top = -1
    for t in range(kept):
        r = active[t]
        ub = (bx1[r] - bx0[r]) * (by1[r] - by0[r])
        total += ub
        if ub > best:
            second = best
            best = ub
            top = r
        elif ub > second:
            second = ub
    lower = quads - (total - best)
    if lower > second:
        return _box_of(box, bx0, by0, bx1, by1, top)
    # the rows the candidates span are read; the figures of every component within them are complete
    box[0] = w
    box[1] = h
    box[2] = -1
    box[3] = -1
    for t in range(kept):
        r = active[t]
        area2[r] = 0
        n_int[r] = 0
        n_adj[r] = 0
        if (bx1[r] - bx0[r]) * (by1[r] - by0[r]) >= lower:
            box[0] = min(box[0], bx0[r])
            box[1] = min(box[1], by0[r])
            box[2] = max(box[2], bx1[r])
            box[3] = max(box[3], by1[r])
    y0 = box[1]
    y1 = box[3]
    _areas(cur, v, y0, y1, w, row_first, rs, re, rpx, rpv, parent, area2, n_int, n_adj, ia, ib, ir)
    top = -1
    for t in range(kept):  # the largest lower bound: exact without a hole, the pixels' area with one
        r = active[t]
        if by0[r] >= y0 and by1[r] <= y1 and (top < 0 or area2[r] > area2[top]):
            top = r
    for t in range(kept):
        r = active[t]
        if r == top:
            continue
        exact = by0[r] >= y0 and by1[r] <= y1 and n_int[r] - n_adj[r] == 1
        upper = area2[r] if exact else 2 * (bx1[r] - bx0[r]) * (by1[r] - by0[r])
        if upper >= area2[top]:
            return False  # box: the candidates'
    return _box_of(box, bx0, by0, bx1, by1, top)


@numba.njit(cache=True, nogil=True, inline='always')
def _box_of(box, bx0, by0, bx1, by1, r) -> bool:
    """Write root ``r``'s extents to ``box``: it is the largest; True."""
    box[0] = bx0[r]
    box[1] = by0[r]
    box[2] = bx1[r]
    box[3] = by1[r]
    return True


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
def best_overlap(
    query: np.ndarray, boxes: np.ndarray, map_of_query: np.ndarray, gt: np.ndarray, gt_start: np.ndarray, out
) -> None:
    """``out[q] = max(out[q], best IoU of each box of query q with its map's boxes in gt)``.

    Boxes are inclusive int64 ``x0 y0 x1 y1``; ``gt[gt_start[m]:gt_start[m + 1]]`` are map m's. The IoU is
    the reference's: ``inter / union`` in float64, 0 where the union is not positive.
    """
    for i in range(query.size):
        qi = query[i]
        m = map_of_query[qi]
        ax0, ay0, ax1, ay1 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        area_a = (ax1 - ax0 + 1) * (ay1 - ay0 + 1)
        best = out[qi]
        for g in range(gt_start[m], gt_start[m + 1]):
            bx0, by0, bx1, by1 = gt[g, 0], gt[g, 1], gt[g, 2], gt[g, 3]
            iw = max(0, min(ax1, bx1) - max(ax0, bx0) + 1)
            ih = max(0, min(ay1, by1) - max(ay0, by0) + 1)
            inter = iw * ih
            den = area_a + (bx1 - bx0 + 1) * (by1 - by0 + 1) - inter
            iou = inter / den if den > 0 else 0.0
            best = max(best, iou)
        out[qi] = best
