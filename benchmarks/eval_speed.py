"""Speed of timm_adl.metrics.BoxEvaluator against the reference algorithm, on identical numbers.

The score maps are synthetic CAMs made the way the reference makes them: a low-resolution map (7x7 or
14x14: one to three Gaussian blobs plus noise, as a CAM of a GAP network), resized to 224x224 with
OpenCV's bicubic interpolation and min-max normalised. The reference is wsolevaluation's
``BoxEvaluator.accumulate`` written out from its definition, step for step (see ``reference_curves``),
run in this process on a subset; its time is extrapolated to the full set. Both must give identical
accuracy curves.

Two figures per variant: one thread against the reference in CPU time (time.process_time, so other
load on the machine skews the ratio little), and every core (``num_threads=None``, the default)
in wall time against the reference's wall time. The reference runs on one core, as it ships. The first
call, which compiles our numba kernels (or loads them from numba's on-disk cache), is timed apart.

    python benchmarks/eval_speed.py                 # 5,794 maps (the CUB test set), 100 thresholds
    python benchmarks/eval_speed.py --maps 1000 --reference-maps 100
    python benchmarks/eval_speed.py --breakdown     # also the time of each stage
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from timm_adl.metrics import BoxEvaluator
from timm_adl.metrics.boxes import check_num_threads

SIZE = 224


def synthetic_cams(rng: np.random.Generator, n: int, noise: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """``n`` CAM-like score maps at 224x224 (float32, [0, 1]) and a ground-truth box per map."""
    maps = np.empty((n, SIZE, SIZE), dtype=np.float32)
    boxes = []
    for i in range(n):
        res = int(rng.choice([7, 14]))
        yy, xx = np.mgrid[0:res, 0:res] / (res - 1)
        low = np.zeros((res, res))
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.random(2)
            s = rng.uniform(0.1, 0.3)
            low += rng.uniform(0.3, 1.0) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        low += rng.normal(0, noise, low.shape)
        cam = cv2.resize(low.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        lo, hi = cam.min(), cam.max()
        maps[i] = (cam - lo) / (hi - lo) if hi > lo else 0
        # a box around the strongest region, jittered: the object the CAM should find
        ys, xs = np.nonzero(maps[i] > rng.uniform(0.3, 0.6))
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
        jit = rng.integers(-15, 16, 4)
        box = np.clip([x0 + jit[0], y0 + jit[1], x1 + jit[2], y1 + jit[3]], 0, SIZE - 1)
        boxes.append(
            np.array([[min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]])
        )
    return maps, boxes


def reference_curves(maps, boxes, thresholds, iou_thresholds, multi_contour: bool) -> dict:
    """wsolevaluation's BoxEvaluator.accumulate, written from its definition, step for step.

    Per map: the validity checks, the 8-bit map, then per threshold ``cv2.threshold`` at
    ``int(thr * max)``, ``findContours``, the largest contour by ``contourArea`` (or all), ``boundingRect``;
    then one IoU matrix for the boxes of all thresholds and, per threshold, the best IoU of its boxes
    (the reference takes the row maxima of the whole matrix again at every threshold; so does this).
    """
    correct = {d: np.zeros(len(thresholds)) for d in iou_thresholds}
    for scoremap, gt in zip(maps, boxes, strict=True):
        scoremap = scoremap.astype(np.float64)  # the reference receives float64 maps (its t2n)
        if np.isnan(scoremap).any() or (scoremap > 1).any() or (scoremap < 0).any():
            raise ValueError('score maps must be in [0, 1]')
        height, width = scoremap.shape
        image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
        per_threshold, counts = [], []
        for thr in thresholds:
            _, binary = cv2.threshold(image, int(thr * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                per_threshold.append(np.zeros((1, 4), dtype=np.int64))
                counts.append(1)
                continue
            if not multi_contour:
                contours = [max(contours, key=cv2.contourArea)]
            est = []
            for c in contours:
                x, y, w, h = cv2.boundingRect(c)
                est.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
            per_threshold.append(np.asarray(est))
            counts.append(len(contours))
        a = np.concatenate(per_threshold)[:, None, :]
        b = np.asarray(gt)[None, :, :]
        inter = np.maximum(
            0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
        ) * np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
        union = (
            (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
            + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
            - inter
        )
        ious = inter / np.where(union > 0, union, 1) * (union > 0)
        best, start = [], 0
        for count in counts:
            best.append(max(ious.max(1)[start : start + count]))
            start += count
        for d in iou_thresholds:
            correct[d][np.flatnonzero(np.asarray(best) >= d / 100)] += 1
    return {d: c * 100.0 / len(maps) for d, c in correct.items()}


def time_ours(batches: list, multi: bool, num_threads: int) -> tuple[float, float, dict]:
    """CPU seconds and wall seconds per map of BoxEvaluator over the batches, and its result.

    The clock runs from the first ``update`` to the end of ``compute``: with several threads ``update``
    returns before its batch is done, and ``compute`` waits for the rest.
    """
    ev = BoxEvaluator(multi_contour=multi, num_threads=num_threads)
    c0, w0 = time.process_time(), time.perf_counter()
    for maps, boxes in batches:
        ev.update(maps, boxes)
    r = ev.compute()
    n = sum(len(maps) for maps, _ in batches)
    return (time.process_time() - c0) / n, (time.perf_counter() - w0) / n, r


def breakdown(batches: list, thresholds: np.ndarray) -> dict[str, float]:
    """CPU ms per map, one thread, of the stages of an evaluator's update (what the README's list of
    where the time goes reports)."""
    from timm_adl.metrics._levelsets import sweep
    from timm_adl.metrics.boxes import _prepare, quantised_scoremaps

    stages = {
        'read and quantise the float maps': lambda maps, q, lv, luts: quantised_scoremaps(maps),
        'foreground sweep, every component': lambda maps, q, lv, luts: sweep(
            q, luts, lv.k, lv.offset, True, False
        ),
        'foreground sweep, picking the largest': lambda maps, q, lv, luts: sweep(
            q, luts, lv.k, lv.offset, True, True
        ),
        'background sweep (the holes)': lambda maps, q, lv, luts: sweep(
            q, luts, lv.k, lv.offset, False, False
        ),
    }
    prepared = []
    for maps, _ in batches:
        q = quantised_scoremaps(maps)[1]
        prepared.append((maps, q, *_prepare(q, thresholds)))
    n = sum(len(maps) for maps, _ in batches)
    out = {}
    for name, stage in stages.items():
        c0 = time.process_time()
        for args in prepared:
            stage(*args)
        out[name] = (time.process_time() - c0) / n * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--maps', type=int, default=5794, help='maps for our timing (default: CUB test set)')
    parser.add_argument('--reference-maps', type=int, default=150, help='maps timed with the reference')
    parser.add_argument('--batch', type=int, default=64, help='maps per update() call')
    parser.add_argument('--noise', type=float, default=0.04, help='noise of the low-resolution CAMs')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--breakdown', action='store_true', help='also print CPU ms per map of each stage (one thread)'
    )
    args = parser.parse_args()
    cv2.setNumThreads(1)  # OpenCV's own threads off: the reference runs on one core
    thresholds = np.arange(0, 1, 0.01)
    iou = (30, 50, 70)
    print(f'{args.maps} synthetic {SIZE}x{SIZE} CAMs, {len(thresholds)} thresholds, IoU {iou}')
    warm_maps, warm_boxes = synthetic_cams(np.random.default_rng(args.seed + 1), 2, args.noise)
    t0 = time.perf_counter()
    for multi in (False, True):
        BoxEvaluator(multi_contour=multi).update(warm_maps, warm_boxes)
    print(
        f'first call (numba compile, or load from its cache): {time.perf_counter() - t0:.2f} s wall, not counted'
    )

    threads = check_num_threads(None)
    rng = np.random.default_rng(args.seed)  # every batch made first: nothing else runs while timed
    batches = [
        synthetic_cams(rng, min(args.batch, args.maps - start), args.noise)
        for start in range(0, args.maps, args.batch)
    ]
    for multi in (False, True):
        name = 'MaxBoxAccV2 (multi-contour)' if multi else 'MaxBoxAcc (largest contour)'
        cpu1, _wall1, r = time_ours(batches, multi, num_threads=1)
        _, wall_n, r_n = time_ours(batches, multi, num_threads=threads)

        rng = np.random.default_rng(args.seed)
        maps, boxes = synthetic_cams(rng, args.reference_maps, args.noise)
        c0, w0 = time.process_time(), time.perf_counter()
        ref = reference_curves(maps, boxes, thresholds, iou, multi)
        ref_cpu = (time.process_time() - c0) / args.reference_maps
        ref_wall = (time.perf_counter() - w0) / args.reference_maps
        check = BoxEvaluator(multi_contour=multi)
        check.update(maps, boxes)
        same = all(np.array_equal(check.compute()['curves'][d], ref[d]) for d in iou)
        same_threads = all(np.array_equal(r['curves'][d], r_n['curves'][d]) for d in iou)

        print(f'\n{name}')
        for label, t in (
            ('ours, 1 thread (CPU time)', cpu1),
            (f'ours, {threads} threads (wall)', wall_n),
            ('reference (CPU time)', ref_cpu),
        ):
            print(
                f'  {label:30s} {1 / t:7.0f} maps/s  {t * 1e3:6.3f} ms/map  {t * 5794:6.2f} s for 5,794 maps'
            )
        print(f'  speed-up, 1 thread:  {ref_cpu / cpu1:5.1f}x  (CPU time against CPU time)')
        print(
            f"  speed-up, {threads} threads: {ref_wall / wall_n:5.1f}x  (wall time against the reference's wall time)"
        )
        print(
            f'  identical curves on the {args.reference_maps} reference maps: {same}; 1 vs {threads} threads: {same_threads}'
        )
        print('  ' + ', '.join(f'MaxBoxAcc@{d} {v:.2f}' for d, v in r['max_box_acc'].items()))
        if not (same and same_threads):
            raise SystemExit('MISMATCH between our curves and the reference algorithm')
    if args.breakdown:
        print('\nwhere one thread spends its time (CPU ms per map)')
        for name, ms in breakdown(batches, thresholds).items():
            print(f'  {name:40s} {ms:6.3f}')


if __name__ == '__main__':
    main()
