"""Time of ``compute_cams`` against a plain ``model(x)`` forward, measured in the same run.

For resnet50 (GAP + linear: the reference CAM), convnext_tiny (pool -> LayerNorm -> linear: the head per
cell) and vit_small_patch16_224 (class token: the head per patch token; Grad-CAM at the last block's input),
batch 32 at 224 px on CPU, random weights, eval mode. The three timings are interleaved per repeat (so a
shared machine's load hits each alike) and the median is reported with the ratio to the forward.
Targets: 'cam' at most 1.05x the forward, 'gradcam' at most 3x.

    nice -n 10 python benchmarks/cam_speed.py [--models resnet50 ...] [--batch 32] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch

from timm_adl.cam import compute_cams

MODELS = ('resnet50', 'convnext_tiny', 'vit_small_patch16_224')


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(name: str, batch: int, size: int, repeats: int) -> dict[str, float]:
    """Median seconds of forward / 'cam' / 'gradcam' (labels given, as in an evaluation)."""
    torch.manual_seed(0)
    fixed = timm.get_pretrained_cfg(name).fixed_input_size  # ViTs: give the size to the patch embedding
    model = timm.create_model(name, num_classes=1000, **({'img_size': size} if fixed else {})).eval()
    x = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 1000, (batch,))

    def forward():
        with torch.no_grad():
            model(x)

    runs = {
        'forward': forward,
        'cam': lambda: compute_cams(model, x, labels, method='cam'),
        'gradcam': lambda: compute_cams(model, x, labels, method='gradcam'),
    }
    for fn in runs.values():  # warm-up: allocator, caches, resize matrices
        fn()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for key, fn in runs.items():
            times[key].append(_timed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='*', default=list(MODELS))
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args()
    print(
        f'batch {args.batch}, {args.size} px, CPU, {torch.get_num_threads()} threads, median of '
        f'{args.repeats} interleaved repeats (torch {torch.__version__}, timm {timm.__version__})'
    )
    print(f'{"model":<24} {"forward s":>10} {"cam s":>8} {"ratio":>6} {"gradcam s":>10} {"ratio":>6}')
    for name in args.models:
        t = measure(name, args.batch, args.size, args.repeats)
        print(
            f'{name:<24} {t["forward"]:10.3f} {t["cam"]:8.3f} {t["cam"] / t["forward"]:6.3f} '
            f'{t["gradcam"]:10.3f} {t["gradcam"] / t["forward"]:6.3f}',
            flush=True,
        )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
