"""Which timm model families ``timm_adl.insert`` works on.

For each model module of timm (``timm.list_modules()``), build its smallest architecture (fewest
parameters, counted on the meta device; cached per timm version in ``smallest_architectures.json``),
give any all-zero classifier random weights (timm zero-initialises some: the output would be the bias
whatever ADL does), insert ADL after ``pool3`` and ``pool4`` (where the model has no such aliases: after
two block boundaries on its token or channels-last grid, the middle one and the last one, e.g. a ViT's
``blocks.6`` and ``norm``), and check: eval output bit-identical, train output changed and both ADLs
called, state_dict keys identical in order and the base weights load strict, class and timm attributes
kept, deepcopy/pickle, ``adl_points`` round trip, ``remove`` bit-identical, and a re-trace
(``get_graph_node_names``) that still sees the ADLs. The forwards run at the model's default input size,
or at 224 where that is over 384 and the model accepts 224. Prints a table per family and the share of
ALL families that work; a family with no point at all on a grid of the input fails with the reason.

    nice -n 10 python benchmarks/insert_coverage.py [--modules resnet vgg ...] [--timeout 120] [--refresh]
"""

from __future__ import annotations

import argparse
import copy
import json
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path

import timm
import torch
from _families import fewest_params, randomise_zero_classifiers
from timm.layers import get_graph_node_names
from tqdm import tqdm

import timm_adl
from timm_adl.files import atomic_write_bytes
from timm_adl.points import analyse

POINTS = ('pool3', 'pool4')


CACHE = Path(__file__).with_name('smallest_architectures.json')
LARGE_INPUT = 384  # above this side, run the real forwards at SMALL_INPUT where the model accepts it
SMALL_INPUT = 224


def smallest_architecture(module: str, cache: dict[str, str]) -> str:
    """Fewest parameters among the module's architectures (built on the meta device: no memory, no init).

    The search builds every architecture (``vision_transformer``: 163, minutes here), so its answer is
    cached per timm version in ``smallest_architectures.json``; a cached name no longer registered is
    searched again (``--refresh`` searches all).
    """
    names = timm.list_models(module=module)
    if cache.get(module) in names:
        return cache[module]
    best = fewest_params(names)
    if best is None:
        raise RuntimeError('no architecture of this module builds on the meta device')
    cache[module] = best
    return best


def load_cache(refresh: bool) -> dict[str, str]:
    if refresh or not CACHE.exists():
        return {}
    return json.loads(CACHE.read_text()).get(timm.__version__, {})


def save_cache(found: dict[str, str]) -> None:
    """Merge this run's answers into the file (another run may have written other families meanwhile)."""
    everything = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    everything[timm.__version__] = dict(sorted({**everything.get(timm.__version__, {}), **found}.items()))
    atomic_write_bytes(CACHE, (json.dumps(everything, indent=1) + '\n').encode())


def probe_input(model: torch.nn.Module, size: tuple[int, ...]) -> tuple[int, ...]:
    """The model's default input size, or SMALL_INPUT square where the default is large and the model accepts
    the smaller size (Gemma 4 / Qwen3 ViTs at 768: every check holds at any size, the forwards are 10x cheaper)."""
    if max(size[1:]) <= LARGE_INPUT:
        return size
    small = (size[0], SMALL_INPUT, SMALL_INPUT)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *small))
    except Exception:
        return size
    return small


class NotApplicable(Exception):
    pass


def choose_points(points) -> list[str]:
    """``pool3`` and ``pool4``; else two grid block boundaries (the middle and the last one; both where the
    grid has only two)."""
    if all(p in points.aliases for p in POINTS):
        return list(POINTS)
    grid = [p.name for p in points.candidates() if p.layout is not None and p.module is not None]
    if not grid:
        missing = [p for p in POINTS if p not in points.aliases]
        raise NotApplicable(
            'no point on a grid of the input; ' + '; '.join(f'{p}: {points.why_missing(p)}' for p in missing)
        )
    if len(grid) == 2:  # the middle one is the last one: take both (TNT: its pixel embedding and norm)
        return grid
    return list(dict.fromkeys([grid[len(grid) // 2], grid[-1]]))


def check(name: str) -> str:
    """Run every check on one architecture; return a short note, raise on failure."""
    torch.manual_seed(0)
    base = timm.create_model(name).eval()
    randomise_zero_classifiers(base)
    points = analyse(base)
    chosen = choose_points(points)
    model = timm_adl.insert(base, after=chosen)
    adls = [m for m in model.modules() if isinstance(m, timm_adl.ADL)]
    distinct = len({points.resolve(p)[0] for p in chosen})  # two aliases can name one block boundary
    assert len(adls) == distinct, f'{len(adls)} ADL modules for {distinct} points'
    assert type(model) is type(base), f'class changed to {type(model).__name__}'
    for attr in ('pretrained_cfg', 'default_cfg', 'num_classes', 'forward_features', 'forward_head'):
        assert hasattr(model, attr) == hasattr(base, attr), f'attribute {attr} lost'
    assert list(model.state_dict()) == list(base.state_dict()), 'state_dict keys differ'
    model.load_state_dict(base.state_dict(), strict=True)
    size = probe_input(base, points.input_size)
    x = torch.randn(2, *size)
    model.eval()
    back = timm_adl.remove(model)  # before any train-mode pass changes BatchNorm statistics
    assert type(back) is type(base) and list(back.state_dict()) == list(base.state_dict()), 'remove: keys'
    with torch.no_grad():
        expected = base(x)
        assert torch.equal(expected, model(x)), 'eval output differs'
        assert torch.equal(expected, back.eval()(x)), 'remove: eval output differs'
    del back  # the largest families (400M parameters) keep few copies alive at once
    calls = []
    hooks = [a.register_forward_hook(lambda *_: calls.append(1)) for a in adls]
    model.train()
    base.train()
    with torch.no_grad():
        torch.manual_seed(1)
        y_base = base(x)
        torch.manual_seed(1)
        y_model = model(x)
    for h in hooks:
        h.remove()
    assert len(calls) == distinct, f'{len(calls)} ADL calls in train mode'
    assert not torch.equal(y_base, y_model), 'train output unchanged'
    model.eval()
    copy.deepcopy(model)
    pickle.loads(pickle.dumps(model))
    rebuilt = timm_adl.insert(base, after=timm_adl.adl_points(model))
    assert timm_adl.adl_points(rebuilt) == timm_adl.adl_points(model), 'adl_points round trip'
    names = [p for p, _ in model.named_modules() if isinstance(_, timm_adl.ADL)]
    assert names == [p for p, _ in rebuilt.named_modules() if isinstance(_, timm_adl.ADL)], (
        'rebuilt elsewhere'
    )
    del rebuilt
    layouts = '/'.join(sorted({a.layout for a in adls}))
    where = ', '.join(f'{a}={points.resolve(a)[0][1]}' for a in chosen) + f' [{layouts}]'
    try:
        nodes = get_graph_node_names(model)[1]
        seen = sum(1 for n in nodes if n.split('.')[-1].endswith('adl'))
        note = '' if seen == distinct else f'; re-trace sees {seen}/{distinct} ADL (inside a leaf module)'
    except Exception as err:  # model not FX-traceable as a whole
        note = f'; re-trace fails: {type(err).__name__}'
    small = '' if size == points.input_size else f'; forwards at {size[1]}x{size[2]}'
    return where + note + small


def _alarm(signum, frame):
    raise TimeoutError('time limit')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--modules', nargs='*', help='timm modules to check (default: all)')
    parser.add_argument('--timeout', type=int, default=180, help='seconds per family')
    parser.add_argument('--refresh', action='store_true', help='search every smallest architecture again')
    args = parser.parse_args()
    cache = load_cache(args.refresh)
    torch.set_num_threads(1)
    # timm's own model modules only (plugins such as timm_adl register theirs in the same registry)
    modules = args.modules or [m for m in timm.list_modules() if f'timm.models.{m}' in sys.modules]
    rows = []
    signal.signal(signal.SIGALRM, _alarm)
    for module in tqdm(modules, disable=None, file=sys.stderr, leave=False):
        signal.alarm(args.timeout)
        start = time.perf_counter()
        arch = '?'
        try:
            arch = smallest_architecture(module, cache)
            save_cache({module: arch})
            status, detail = 'works', check(arch)
        except NotApplicable as err:
            status, detail = 'FAILS', f'not applicable: {err}'
        except Exception as err:
            status, detail = 'FAILS', f'{type(err).__name__}: {str(err).splitlines()[0][:200]}'
            if '-v' in sys.argv:
                traceback.print_exc()
        finally:
            signal.alarm(0)
        rows.append((module, arch, status, detail, time.perf_counter() - start))
        print(f'{module}: {arch}: {status} ({rows[-1][4]:.1f} s) {detail}', file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows)
    arch_width = max(len(r[1]) for r in rows)
    print(f'{"family":<{width}}  {"architecture":<{arch_width}}  {"result":<5}  {"s":>5}  detail')
    for module, arch, status, detail, secs in rows:
        print(f'{module:<{width}}  {arch:<{arch_width}}  {status:<5}  {secs:5.1f}  {detail}')
    works = sum(r[2] == 'works' for r in rows)
    share = 100.0 * works / max(len(rows), 1)
    print(
        f'\n{works}/{len(rows)} families work ({share:.1f} %); {len(rows) - works} fail '
        f'(timm {timm.__version__}, torch {torch.__version__})'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
