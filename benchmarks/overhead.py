"""ADL's cost on the four paper backbones: each ``*_adl`` model against its baseline, same weights.

Prints, per pair: the parameter-count ratio (must be exactly 1: ADL has no parameters), the train-step
time ratio (forward + backward, CPU), the eval (no-grad forward) time ratio and the time ``timm_adl.insert``
takes to put ADL into the baseline. Runs of the two models are interleaved in one process (ABBA order)
and summarised by medians, so load from other processes on a shared machine hits both alike. Times are
the process's CPU time with one torch thread by default: on a shared machine wall-clock time mostly
measures the other users (wall-clock ratios are printed too, in brackets).

    nice -n 10 python benchmarks/overhead.py                 # batch 8 at 224, all four pairs
    python benchmarks/overhead.py --models resnet50_se_adl --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import timm_adl


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()


def _eval_step(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def _interleaved(
    fn_a: Callable[[], None], fn_b: Callable[[], None], repeats: int, bar: tqdm
) -> dict[str, tuple[float, float]]:
    """Median seconds of ``fn_a`` and ``fn_b`` (CPU time and wall time), run in ABBA order after a warm-up."""
    fn_a(), fn_b()
    runs: dict[str, tuple[list[float], list[float]]] = {'cpu': ([], []), 'wall': ([], [])}
    for i in range(repeats):
        order = ((0, fn_a), (1, fn_b)) if i % 2 == 0 else ((1, fn_b), (0, fn_a))
        for slot, fn in order:
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            runs['cpu'][slot].append(time.process_time() - cpu)
            runs['wall'][slot].append(time.perf_counter() - wall)
            bar.update()
    return {clock: (statistics.median(a), statistics.median(b)) for clock, (a, b) in runs.items()}


def measure(adl_name: str, batch_size: int, img_size: int, repeats: int) -> dict[str, Any]:
    base_name = timm_adl.models.BASELINES[adl_name]
    torch.manual_seed(0)
    base = timm.create_model(base_name)
    adl = timm.create_model(adl_name)
    adl.load_state_dict(base.state_dict(), strict=True)  # same weights: only ADL differs

    points = timm_adl.adl_points(adl)
    insert_times = []
    for _ in range(3):
        start = time.process_time()
        timm_adl.insert(base, after=points)
        insert_times.append(time.process_time() - start)

    x = torch.randn(batch_size, 3, img_size, img_size)
    y = torch.randint(0, base.num_classes, (batch_size,))
    with tqdm(total=4 * repeats, desc=adl_name, leave=False, disable=None) as bar:
        base.train(), adl.train()
        train = _interleaved(lambda: _train_step(base, x, y), lambda: _train_step(adl, x, y), repeats, bar)
        base.eval(), adl.eval()
        evaluation = _interleaved(lambda: _eval_step(base, x), lambda: _eval_step(adl, x), repeats, bar)
    return dict(
        model=adl_name,
        baseline=base_name,
        params_base=_n_params(base),
        params_adl=_n_params(adl),
        train=train,
        eval=evaluation,
        insert=statistics.median(insert_times),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--models', nargs='+', default=sorted(timm_adl.models.BASELINES), help='ADL model names'
    )
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=5, help='timed runs per model and mode (median)')
    parser.add_argument(
        '--threads', type=int, default=1, help='torch CPU threads (1: CPU time is then exact)'
    )
    args = parser.parse_args()
    unknown = [m for m in args.models if m not in timm_adl.models.BASELINES]
    if unknown:
        parser.error(f'unknown ADL model(s) {unknown}; expected some of {sorted(timm_adl.models.BASELINES)}')
    torch.set_num_threads(args.threads)

    print(
        f'torch {torch.__version__}, timm {timm.__version__}, CPU threads {args.threads}, '
        f'batch {args.batch_size} at {args.img_size}x{args.img_size}, {args.repeats} interleaved repeats (median); '
        'ms = CPU time of the process (wall-clock ratios in brackets), insert = CPU seconds'
    )
    header = (
        f'{"ADL model":<17} {"params ADL/base":>23} {"train ms base":>13} {"train ms ADL":>12} {"train ratio":>16} '
        f'{"eval ms base":>12} {"eval ms ADL":>11} {"eval ratio":>16} {"insert s":>8}'
    )
    print(header)
    print('-' * len(header))
    for name in args.models:
        r = measure(name, args.batch_size, args.img_size, args.repeats)
        params = f'{r["params_adl"] / r["params_base"]:g} ({r["params_adl"]}/{r["params_base"]})'
        cells = [f'{r["model"]:<17} {params:>23}']
        for mode in ('train', 'eval'):
            (cpu_base, cpu_adl), (wall_base, wall_adl) = r[mode]['cpu'], r[mode]['wall']
            ratio = f'{cpu_adl / cpu_base:.3f} [{wall_adl / wall_base:.3f}]'
            width = 13 if mode == 'train' else 12
            cells.append(f'{1e3 * cpu_base:>{width}.0f} {1e3 * cpu_adl:>{width - 1}.0f} {ratio:>16}')
        cells.append(f'{r["insert"]:>8.3f}')
        print(' '.join(cells), flush=True)


if __name__ == '__main__':
    main()
