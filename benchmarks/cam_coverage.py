"""Which timm model families ``timm_adl.compute_cams`` maps, with ``method='cam'`` and ``'gradcam'``.

For each model module of timm (``timm.list_modules()``), build its smallest architecture (fewest parameters,
counted on the meta device) with 10 classes and random weights, at a small input (96 px where the model
accepts any size and keeps a feature map of at least 2x2 cells there, else its configured size), and for
each method check (BatchNorm statistics first estimated on random inputs in train mode, as training would
leave them: at their initial values untrained LeViT features collapse to one value) : maps of shape (2, H, W), finite, in [0, 1], not degenerate (each map reaches 1),
identical on a second call. Also prints the dense-head
logit difference (``timm_adl.cam_heads.dense_head_gap``: max |spatial mean of the per-cell logits - real
logits| / max |logits|): 'exact' when below 1e-4 (the head is linear after its pooling), else the figure
(random weights: trained heads differ). Prints a table per family and the share of ALL families with maps.

    python benchmarks/cam_coverage.py [--modules resnet vit ...] [--timeout 120] [--jobs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import time

import timm
import torch
from _families import fewest_params, randomise_zero_classifiers
from tqdm import tqdm

import timm_adl  # noqa: F401  (registers timm_adl's models; only timm's own modules are checked)
from timm_adl.cam import CAM_METHODS, compute_cams
from timm_adl.cam_heads import dense_head_gap, feature_layout

SMALL = 96
EXACT = 1e-4


_BIG = ('large', 'huge', 'giant', 'gigantic', 'xlarge', 'so400m', 'so150m', '_g_', 'enormous', '_7b', '_1b')


def smallest_architecture(module: str) -> str:
    """Fewest parameters among the module's architectures (built on the meta device: no memory, no init).

    timm's tiny ``test_*`` architectures, where a module has them, are the only candidates; names that say
    they are big are skipped (building every ViT variant, even on meta, takes minutes)."""
    names = timm.list_models(module=module)
    tests = [n for n in names if n.startswith('test_')]
    names = tests or [n for n in names if not any(b in n for b in _BIG)] or names
    best = fewest_params(names)
    if best is None:
        raise RuntimeError('no architecture of this module builds on the meta device')
    return best


def build(name: str) -> tuple[torch.nn.Module, int]:
    """The model with random weights and its input size: SMALL px where it runs there, else its own."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    randomise_zero_classifiers(model)  # e.g. Hiera's zero head: constant maps, as training would not leave it
    size = _input_size(model)
    calibrate_batchnorm(model, size)
    return model, size


def calibrate_batchnorm(model: torch.nn.Module, size: int) -> None:
    """BatchNorm statistics estimated on random inputs, as training would leave them.

    At timm's initial statistics (mean 0, variance 1) eval-mode BatchNorm passes untrained activations
    through unscaled; where the random weights shrink them (LeViT: small linear layers, each followed by
    BatchNorm) they reach rounding noise and every output token is the same, so every map is constant.
    Models whose train-mode forward fails keep their initial statistics."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [norm.momentum for norm in norms]
    gen = torch.Generator().manual_seed(1)
    try:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(4, 3, size, size, generator=gen))
    except Exception:
        model.load_state_dict(saved)
    finally:
        for norm, value in zip(norms, momentum, strict=True):
            norm.momentum = value
        model.eval()


def _input_size(model: torch.nn.Module) -> int:
    """SMALL px where the model runs there and keeps a grid of at least 2x2 cells, else its own size."""
    cfg = model.pretrained_cfg
    size = int(cfg.get('input_size', (3, 224, 224))[-1])
    if not cfg.get('fixed_input_size', False) and size > SMALL:
        try:
            with torch.no_grad():
                x = torch.randn(1, 3, SMALL, SMALL)
                feats = model.forward_features(x)
                model.forward_head(feats)
            grid = feature_layout(model, feats, (SMALL, SMALL)).grid
            if min(grid) >= 2:  # a 1x1 map has no localisation: use the model's own size
                size = SMALL
        except Exception:
            pass
    return size


def check_method(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, method: str) -> str:
    """Run the checks of one method; return the map size, raise AssertionError on a failed check."""
    first = compute_cams(model, x, labels, method=method)
    again = compute_cams(model, x, labels, method=method)
    for name, cams in (('gt', first.cams_gt), ('top1', first.cams_top1)):
        assert cams.shape == (x.shape[0], *x.shape[-2:]), f'{name} maps have shape {tuple(cams.shape)}'
        assert torch.isfinite(cams).all(), f'{name} maps not finite'
        assert cams.min() >= 0 and cams.max() <= 1, f'{name} maps outside [0, 1]'
        assert (cams.amax((1, 2)) == 1).all(), f'{name} maps degenerate (constant)'
    assert torch.equal(first.cams_gt, again.cams_gt), 'not deterministic'
    assert first.method == method
    return 'x'.join(str(s) for s in first.raw_gt.shape[-2:])


def check(name: str) -> tuple[dict[str, str], str]:
    """Per-method result ('ok ...' or 'FAILS: reason') and the dense-head note of one architecture."""
    model, size = build(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    labels = torch.tensor([1, 2])
    results = {}
    for method in CAM_METHODS:
        try:
            results[method] = f'ok {check_method(model, x, labels, method)}'
        except TimeoutError:
            raise
        except Exception as err:
            results[method] = f'FAILS: {type(err).__name__}: {str(err).splitlines()[0][:160]}'
    try:
        gap = dense_head_gap(model, x)
        head = 'exact' if gap < EXACT else f'approx {gap:.2g}'
    except TimeoutError:
        raise
    except Exception as err:
        head = f'no dense head ({type(err).__name__})'
    return results, f'{size}px, {head}'


def _alarm(signum, frame):
    raise TimeoutError('time limit')


def run_family(module: str, timeout: int) -> tuple[str, str, list[str], str, float]:
    """(family, architecture, per-method results, note, seconds) of one timm module, within ``timeout`` s."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    start = time.perf_counter()
    arch, results, note = '?', {}, ''
    try:
        arch = smallest_architecture(module)
        results, note = check(arch)
    except Exception as err:
        note = f'FAILS: {type(err).__name__}: {str(err).splitlines()[0][:160]}'
    finally:
        signal.alarm(0)
    cells = [results.get(m, 'FAILS') for m in CAM_METHODS]
    return module, arch, cells, note, time.perf_counter() - start


def _run_family_args(job: tuple[str, int]):
    return run_family(*job)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--modules', nargs='*', help='timm modules to check (default: all)')
    parser.add_argument(
        '--timeout', type=int, default=120, help='seconds per family (checked between Python calls)'
    )
    parser.add_argument('--jobs', type=int, default=1, help='families checked in parallel (one process each)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    modules = args.modules or [m for m in timm.list_modules() if f'timm.models.{m}' in sys.modules]
    rows = []
    # a fresh process per family: memory of big models is returned, a crash costs one family only
    with mp.get_context('fork').Pool(args.jobs, maxtasksperchild=1) as pool:
        jobs = [(m, args.timeout) for m in modules]
        for row in tqdm(pool.imap(_run_family_args, jobs), total=len(jobs), disable=None, file=sys.stderr):
            rows.append(row)
            module, arch, cells, note, secs = row
            print(f'{module}: {arch}: {cells} {note} ({secs:.1f} s)', file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows)
    arch_width = max(len(r[1]) for r in rows)
    head = '  '.join(f'{m:<10}' for m in CAM_METHODS)
    print(f'{"family":<{width}}  {"architecture":<{arch_width}}  {head}  {"s":>5}  input, dense head')
    for module, arch, cells, note, secs in rows:
        marks = '  '.join(f'{c.split(":")[0]:<10}' for c in cells)
        print(f'{module:<{width}}  {arch:<{arch_width}}  {marks}  {secs:5.1f}  {note}')
    failures = [
        (r[0], m, c)
        for r in rows
        for m, c in zip(CAM_METHODS, r[2], strict=True)
        if c != 'ok' and not c.startswith('ok')
    ]
    if failures:
        print('\nfailures:')
        for module, method, reason in failures:
            print(f'  {module} [{method}]: {reason}')
    total = len(rows)
    for i, method in enumerate(CAM_METHODS):
        ok = sum(r[2][i].startswith('ok') for r in rows)
        print(f'{method}: maps on {ok}/{total} families ({100.0 * ok / total:.1f} %)')
    both = sum(all(c.startswith('ok') for c in r[2]) for r in rows)
    exact = sum('exact' in r[3] for r in rows)
    print(
        f'both methods: {both}/{total} families ({100.0 * both / total:.1f} %); dense head exact on {exact}; '
        f'timm {timm.__version__}, torch {torch.__version__}'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
