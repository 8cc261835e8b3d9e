"""The trainer's GPU settings run on CPU before any GPU is paid for: bf16 autocast, channels_last, compile.

With ``device: cpu`` the trainer keeps ``amp: bf16`` (CPU autocast) and ``channels_last``; ``device: auto``
without a GPU turns them off (a GPU recipe runs unchanged on a laptop). Hooks on the first convolution
record what the training steps really ran with, so a setting that is silently dropped fails the test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fakes import make_fake_wsol_metadata, tiny_recipe

import timm_adl.train.engine as engine
from timm_adl.train import ConfigError, load_config, run_training


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=4)  # 8 images per split
    return root


def _recipe(root: Path, out: Path, **over) -> dict:
    """The shared tiny recipe for one epoch, selected on top1_clas."""
    return tiny_recipe(root, out, **{'epochs': 1, 'select_metric': 'top1_clas', **over})


def _train_spying(monkeypatch, recipe: dict) -> tuple[dict, list[dict]]:
    """Train ``recipe``; return the result and, per training-mode forward of the stem's first conv, what it saw."""
    seen: list[dict] = []
    build = engine.build_model

    def spying_build(*args, **kwargs):
        model, new_params = build(*args, **kwargs)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))

        def hook(module, inputs, output):
            if module.training:
                seen.append(
                    dict(
                        out_dtype=output.dtype,
                        input_cl=inputs[0].is_contiguous(memory_format=torch.channels_last),
                        weight_cl=module.weight.is_contiguous(memory_format=torch.channels_last),
                    )
                )

        conv.register_forward_hook(hook)
        return model, new_params

    monkeypatch.setattr(engine, 'build_model', spying_build)
    torch.set_num_threads(1)
    result = run_training(load_config(recipe), progress=False)
    return result, seen


def _finite_losses(out: Path) -> bool:
    import json

    rows = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    return bool(rows) and all(math.isfinite(r['train_loss']) for r in rows)


def test_bf16_autocast_steps_on_cpu(data_root, tmp_path, monkeypatch):
    out = tmp_path / 'bf16'
    result, seen = _train_spying(monkeypatch, _recipe(data_root, out, device='cpu', amp='bf16'))
    assert result['steps'] == 2 and len(seen) == 2
    assert all(s['out_dtype'] == torch.bfloat16 for s in seen)
    assert _finite_losses(out) and 'top1_clas' in result['final']


def test_channels_last_steps_on_cpu(data_root, tmp_path, monkeypatch):
    out = tmp_path / 'cl'
    result, seen = _train_spying(monkeypatch, _recipe(data_root, out, device='cpu', channels_last=True))
    assert result['steps'] == 2 and len(seen) == 2
    assert all(s['input_cl'] and s['weight_cl'] and s['out_dtype'] == torch.float32 for s in seen)
    assert _finite_losses(out)


def test_gpu_settings_are_off_when_auto_finds_no_gpu(data_root, tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present: device=auto uses it')
    recipe = _recipe(data_root, tmp_path / 'auto', device='auto', amp='bf16', channels_last=True)
    _, seen = _train_spying(monkeypatch, recipe)
    assert all(s['out_dtype'] == torch.float32 and not s['weight_cl'] for s in seen)
    assert 'amp=bf16 and channels_last=True are off' in capsys.readouterr().err + capsys.readouterr().out
    with pytest.raises(ConfigError, match='amp=fp16 needs a GPU'):
        load_config(_recipe(data_root, tmp_path / 'x', device='cpu', amp='fp16'))


@pytest.mark.slow
def test_compiled_steps_on_cpu_with_the_gpu_settings(data_root, tmp_path, monkeypatch):
    """compile: true (inductor, C++ kernels on CPU) with bf16 autocast, channels_last and ADL layers, as the
    paper recipes run on a GPU. A two-stage model keeps the cold compile to ~75 CPU-seconds."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = []
    real_compile = torch.compile

    def spying_compile(model, *args, **kwargs):
        compiled.append(model)
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, 'compile', spying_compile)
    out = tmp_path / 'compiled'
    recipe = _recipe(data_root, out, device='cpu', amp='bf16', channels_last=True, compile=True)
    recipe.update(
        model_kwargs=dict(channels=[8, 16, 16, 16], stem_width=8, layers=[1, 1, 0, 0]),
        adl=dict(after=['layer1', 'layer2'], gamma=0.8),
    )
    torch.set_num_threads(1)
    result = run_training(load_config(recipe), progress=False)
    assert len(compiled) == 1 and result['steps'] == 2
    assert counters['stats']['unique_graphs'] >= 1  # dynamo captured the model (not a silent eager fallback)
    assert _finite_losses(out)
