"""aug.cutmix_alpha / aug.cutmix_prob: CutMix through timm's Mixup on the training batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fakes import make_fake_wsol_metadata, tiny_recipe
from safetensors.torch import load_file

import timm_adl.train.engine as engine
from timm_adl.train import ConfigError, load_config, run_training
from timm_adl.train.config import AugConfig
from timm_adl.train.cutmix import apply_cutmix, build_cutmix

RECIPE = dict(model='resnet18', data=dict(root='x'))


@pytest.mark.parametrize(
    'overrides,message',
    [
        (['aug.cutmix_alpha=-1'], "config key 'aug.cutmix_alpha' must be >= 0 (0 = off), got -1.0"),
        (['aug.cutmix_prob=1.5'], "config key 'aug.cutmix_prob' must be in [0, 1], got 1.5"),
        (['aug.cutmix_alpha=1', 'batch_size=5'], 'aug.cutmix_alpha needs an even batch_size (CutMix pairs'),
    ],
)
def test_cutmix_keys_are_checked(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(RECIPE, overrides)
    assert message in str(err.value) and '\n' not in str(err.value)


def test_off_by_default_and_draws_from_its_own_stream():
    assert build_cutmix(AugConfig(), 3) is None
    mixup = build_cutmix(AugConfig(cutmix_alpha=1.0), 3)
    images, labels = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0])
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = apply_cutmix(mixup, images.clone(), labels, seed=0, rank=0, step=7)
    b = apply_cutmix(mixup, images.clone(), labels, seed=0, rank=0, step=7)
    assert (np.random.get_state()[1] == before).all()  # numpy's global stream is given back
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # a function of (seed, rank, step)
    assert not torch.equal(a[0], images)  # patches pasted (alpha 1, prob 1)
    assert torch.allclose(a[1].sum(1), torch.ones(4)) and a[1].shape == (4, 3)
    assert ((a[1] > 0) & (a[1] < 1)).any()  # soft targets: the pasted area's share


def test_one_step_runs_and_alpha_zero_is_untouched(tmp_path, monkeypatch):
    data = tmp_path / 'data'
    make_fake_wsol_metadata(data, n_classes=2, per_class=2, splits=('train',))
    torch.set_num_threads(1)
    calls = []
    real = engine.apply_cutmix
    monkeypatch.setattr(engine, 'apply_cutmix', lambda *a, **k: calls.append(k['step']) or real(*a, **k))

    def train(out: str, **aug) -> dict:
        over = dict(epochs=1, data=dict(name='wsol-metadata', root=str(data), val_split=None), aug=aug)
        run_training(load_config(tiny_recipe(data, tmp_path / out, **over)), progress=False)
        return load_file(str(tmp_path / out / 'last.safetensors'))

    plain = train('plain')
    off = train('off', cutmix_alpha=0.0, cutmix_prob=0.3)
    assert calls == []
    mixed = train('mixed', cutmix_alpha=1.0)
    assert calls == [0]  # one step, mixed
    assert all(torch.equal(plain[k], off[k]) for k in plain)
    assert any(not torch.equal(plain[k], mixed[k]) for k in plain)
    assert all(torch.isfinite(v).all() for v in mixed.values())
