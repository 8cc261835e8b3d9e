"""Speed of timm_adl.metrics.BoxEvaluator against the reference algorithm, on identical numbers.

The score maps are synthetic CAMs made the way the reference makes them: a low-resolution map (7x7 or
14x14: one to three Gaussian blobs plus noise, as a CAM of a GAP network), resized to 224x224 with
OpenCV's bicubic interpolation and min-max normalised. The reference algorithm is wsolevaluation's
box extraction written out from its definition (per image, per threshold: threshold, findContours,
contourArea / boundingRect, IoU against every ground-truth box) and run in this process on a subset;
its time is extrapolated to the full set. Both must give identical accuracy curves. Times are CPU
time of this process (time.process_time), so other load on the machine does not skew the ratio. The
first call, which compiles our numba kernels (or loads them from numba's on-disk cache), is timed apart.

    python benchmarks/eval_speed.py                 # 5,794 maps (the CUB test set), 100 thresholds
    python benchmarks/eval_speed.py --maps 1000 --reference-maps 100
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from timm_adl.metrics import BoxEvaluator

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
    """wsolevaluation's BoxEvaluator.accumulate, written from its definition: one OpenCV pass per threshold."""
    correct = {d: np.zeros(len(thresholds)) for d in iou_thresholds}
    for scoremap, gt in zip(maps, boxes, strict=True):
        height, width = scoremap.shape
        image = np.expand_dims((scoremap.astype(np.float64) * 255).astype(np.uint8), 2)
        best = np.zeros(len(thresholds))
        for k, thr in enumerate(thresholds):
            _, binary = cv2.threshold(image, int(thr * np.max(image)), 255, cv2.THRESH_BINARY)
            contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
            if len(contours) == 0:
                est = np.zeros((1, 4), dtype=np.int64)
            else:
                if not multi_contour:
                    contours = [max(contours, key=cv2.contourArea)]
                est = []
                for c in contours:
                    x, y, w, h = cv2.boundingRect(c)
                    est.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
                est = np.asarray(est)
            a, b = est[:, None, :], gt[None, :, :]
            inter = np.maximum(
                0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
            ) * np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
            union = (
                (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
                + (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
                - inter
            )
            best[k] = (inter / np.where(union > 0, union, 1) * (union > 0)).max()
        for d in iou_thresholds:
            correct[d][best >= d / 100] += 1
    return {d: c * 100.0 / len(maps) for d, c in correct.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--maps', type=int, default=5794, help='maps for our timing (default: CUB test set)')
    parser.add_argument('--reference-maps', type=int, default=150, help='maps timed with the reference')
    parser.add_argument('--batch', type=int, default=64, help='maps per update() call')
    parser.add_argument('--noise', type=float, default=0.04, help='noise of the low-resolution CAMs')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, like the reference measurement
    thresholds = np.arange(0, 1, 0.01)
    iou = (30, 50, 70)
    print(f'{args.maps} synthetic {SIZE}x{SIZE} CAMs, {len(thresholds)} thresholds, IoU {iou}, one thread')
    warm_maps, warm_boxes = synthetic_cams(np.random.default_rng(args.seed + 1), 2, args.noise)
    t0 = time.perf_counter()
    for multi in (False, True):
        BoxEvaluator(multi_contour=multi).update(warm_maps, warm_boxes)
    print(
        f'first call (numba compile, or load from its cache): {time.perf_counter() - t0:.2f} s wall, not counted'
    )

    for multi in (False, True):
        name = 'MaxBoxAccV2 (multi-contour)' if multi else 'MaxBoxAcc (largest contour)'
        ev = BoxEvaluator(multi_contour=multi)
        rng = np.random.default_rng(args.seed)
        spent = 0.0
        for start in range(0, args.maps, args.batch):
            maps, boxes = synthetic_cams(rng, min(args.batch, args.maps - start), args.noise)
            t0 = time.process_time()
            ev.update(maps, boxes)
            spent += time.process_time() - t0
        ours = spent / args.maps

        rng = np.random.default_rng(args.seed)
        maps, boxes = synthetic_cams(rng, args.reference_maps, args.noise)
        t0 = time.process_time()
        ref = reference_curves(maps, boxes, thresholds, iou, multi)
        reference = (time.process_time() - t0) / args.reference_maps
        check = BoxEvaluator(multi_contour=multi)
        check.update(maps, boxes)
        same = all(np.array_equal(check.compute()['curves'][d], ref[d]) for d in iou)

        r = ev.compute()
        print(f'\n{name}')
        print(
            f'  ours:      {1 / ours:8.0f} maps/s  {ours * 1e3:6.3f} ms/map  {ours * 5794:6.2f} s for 5,794 maps'
        )
        print(
            f'  reference: {1 / reference:8.0f} maps/s  {reference * 1e3:6.3f} ms/map  '
            f'{reference * 5794:6.2f} s for 5,794 maps (timed on {args.reference_maps})'
        )
        print(f'  speed-up:  {reference / ours:.1f}x')
        print(f'  identical curves on the {args.reference_maps} reference maps: {same}')
        print('  ' + ', '.join(f'MaxBoxAcc@{d} {v:.2f}' for d, v in r['max_box_acc'].items()))
        if not same:
            raise SystemExit('MISMATCH between our curves and the reference algorithm')


if __name__ == '__main__':
    main()
