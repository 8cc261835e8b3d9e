"""How long ``timm_adl.insert`` takes (target: under 2 s for resnet50 on CPU).

    python benchmarks/insert_speed.py [--models resnet50 ...] [--repeats 5] [--threads 1]

Prints, per model, the median wall time of ``insert`` (deep copy + trace + shape propagation + edits)
and of its parts: the deep copy of the model alone and the analysis (``insertion_points``) alone.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import timm
import torch

import timm_adl

POINTS = {
    'resnet50': ['layer3.0', 'layer4.0', 'layer4.2'],
    'vgg16': ['pool3', 'pool4', 'last'],
    'efficientnet_b0': ['pool4', 'pool5', 'last'],
    'inception_v3': ['Mixed_5d', 'Mixed_6e', 'Mixed_6a.max_pool2d'],
    'convnext_tiny': ['pool3', 'pool4', 'last'],
}


def _median_time(repeats: int, fn, *args, **kwargs) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='*', default=list(POINTS), help='timm model names')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings('ignore')
    print(
        f'timm {timm.__version__}, torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}'
    )
    print(f'{"model":<16} {"points":<44} {"insert s":>9} {"deepcopy s":>11} {"analysis s":>11}')
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name).eval()
        after = POINTS.get(name, ['pool3', 'pool4', 'last'])
        timm_adl.insert(model, after=after)  # warm-up: imports, caches
        size = model.pretrained_cfg['input_size']
        total = _median_time(args.repeats, timm_adl.insert, model, after=after)
        clone = _median_time(args.repeats, copy.deepcopy, model)
        analysis = _median_time(args.repeats, timm_adl.insertion_points, model, size)
        print(f'{name:<16} {",".join(after):<44} {total:9.3f} {clone:11.3f} {analysis:11.3f}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
