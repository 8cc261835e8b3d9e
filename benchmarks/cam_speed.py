"""Time of ``compute_cams`` against a plain ``model(x)`` forward, measured in the same run.

For resnet50 (GAP + linear: the reference CAM), convnext_tiny (pool -> LayerNorm -> linear: the head per
cell) and vit_small_patch16_224 (class token: the head per patch token; Grad-CAM at the last block's input),
batch 32 at 224 px on CPU, random weights, eval mode, 2 torch threads. The three timings are interleaved
per repeat (so a shared machine's load hits each alike); the ratio to the forward is taken per repeat and
its median and min-max printed. ``--interleave`` also interleaves the models (one repeat of each per round).
On a loaded machine the forward alone moves by +-10 %: 'cam extra' times what 'cam' adds to the forward
(forward_features answered from a cache: the head, the per-cell head, resize, normalise), and
``1 + extra / forward`` estimates the 'cam' ratio without the forward's noise in the numerator.
Targets: 'cam' at most 1.05x the forward, 'gradcam' at most 3x.

    nice -n 10 python benchmarks/cam_speed.py [--models resnet50 ...] [--repeats 5] [--threads 2] [--interleave]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import timm
import torch

from timm_adl.cam import compute_cams

MODELS = ('resnet50', 'convnext_tiny', 'vit_small_patch16_224')


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def prepare(name: str, batch: int, size: int) -> dict[str, Callable[[], object]]:
    """The three timed calls of one model (labels given, as in an evaluation), warmed up once."""
    torch.manual_seed(0)
    fixed = timm.get_pretrained_cfg(name).fixed_input_size  # ViTs: give the size to the patch embedding
    model = timm.create_model(name, num_classes=1000, **({'img_size': size} if fixed else {})).eval()
    x = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, 1000, (batch,))

    def forward():
        with torch.no_grad():
            model(x)

    with torch.no_grad():
        feats = model.forward_features(x)

    def cam_beyond_forward():
        """'cam' with forward_features answered from a cache: what 'cam' adds to the forward (the head
        twice, the per-cell head, resize, normalise), timed apart from the forward's noise."""
        model.forward_features = lambda images: feats  # an instance attribute shadows the method
        try:
            compute_cams(model, x, labels, method='cam')
        finally:
            del model.forward_features

    runs = {
        'forward': forward,
        'cam': lambda: compute_cams(model, x, labels, method='cam'),
        'gradcam': lambda: compute_cams(model, x, labels, method='gradcam'),
        'cam extra': cam_beyond_forward,
    }
    for fn in runs.values():  # warm-up: allocator, caches, resize matrices
        fn()
    return runs


def measure(runs: dict[str, Callable[[], object]], times: dict[str, list[float]], name: str) -> None:
    """One repeat: forward, 'cam', 'gradcam' back to back, appended to ``times`` (progress on stderr)."""
    for key, fn in runs.items():
        times.setdefault(key, []).append(_timed(fn))
    print(
        f'{name}: ' + ', '.join(f'{k} {v[-1]:.3f} s' for k, v in times.items()), file=sys.stderr, flush=True
    )


def _ratio(times: dict[str, list[float]], key: str) -> str:
    """Median of the per-repeat ratios to the forward of the same repeat, with their min-max spread."""
    ratios = [t / f for t, f in zip(times[key], times['forward'], strict=True)]
    return f'{statistics.median(ratios):6.3f} ({min(ratios):.3f}-{max(ratios):.3f})'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='*', default=list(MODELS))
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument(
        '--interleave',
        action='store_true',
        help="one repeat of every model per round (a shared machine's load then hits all models alike)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f'batch {args.batch}, {args.size} px, CPU, {torch.get_num_threads()} threads, {args.repeats} repeats '
        f'(forward, cam, gradcam interleaved per repeat); ratio = median of per-repeat ratios (min-max); '
        f'torch {torch.__version__}, timm {timm.__version__}'
    )
    times: dict[str, dict[str, list[float]]] = {name: {} for name in args.models}
    if args.interleave:  # every model built first (memory: all of them at once), then rounds
        runs = {name: prepare(name, args.batch, args.size) for name in args.models}
        for _ in range(args.repeats):
            for name in args.models:
                measure(runs[name], times[name], name)
    else:
        for name in args.models:
            runs = prepare(name, args.batch, args.size)
            for _ in range(args.repeats):
                measure(runs, times[name], name)
    print(
        f'{"model":<24} {"forward s":>10} {"cam s":>8} {"cam ratio":>21} {"gradcam s":>10} {"gradcam ratio":>21}'
        f' {"cam extra s":>12} {"1 + extra/fwd":>14}'
    )
    for name in args.models:
        t = {k: statistics.median(v) for k, v in times[name].items()}
        print(
            f'{name:<24} {t["forward"]:10.3f} {t["cam"]:8.3f} {_ratio(times[name], "cam"):>21} '
            f'{t["gradcam"]:10.3f} {_ratio(times[name], "gradcam"):>21} {t["cam extra"]:12.3f} '
            f'{1 + t["cam extra"] / t["forward"]:14.3f}',
            flush=True,
        )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
