"""Trainer pieces without a training run: config loading and errors, schedules, parameter groups, sampler,
checkpoint files, and the CLI's one-line errors."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fakes import make_fake_wsol_metadata

from timm_adl.cli import main
from timm_adl.train import ConfigError, TrainConfig, load_config
from timm_adl.train.checkpoint import latest_resume_point, save_resume_point
from timm_adl.train.config import SchedConfig
from timm_adl.train.distributed import GlobalBatchSampler, SeededDataset
from timm_adl.train.optim import build_optimizer, head_param_names, lr_factor

BASE = {'model': 'resnet10t', 'data': {'name': 'wsol-metadata', 'root': '/data'}}


# ---------------------------------------------------------------------------------------------------------
# config


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / 'r.yaml'
    path.write_text('model: resnet10t\noptim:\n  lr: 1e-4\n  weight_decay: 5\nepochs: 3\n')
    cfg = load_config(
        path,
        ['optim.lr=0.5', 'adl.after=[layer3, layer4]', 'model_kwargs.drop_rate=0.1', 'data.val_split=null'],
    )
    assert isinstance(cfg, TrainConfig)
    assert cfg.optim.lr == 0.5 and cfg.optim.weight_decay == 5.0 and isinstance(cfg.optim.weight_decay, float)
    assert cfg.adl.after == ['layer3', 'layer4'] and cfg.adl.gamma == 0.9  # section created with its defaults
    assert cfg.model_kwargs == {'drop_rate': 0.1} and cfg.data.val_split is None and cfg.epochs == 3
    assert load_config(path).optim.lr == 1e-4  # YAML 1.1 reads '1e-4' as a string: accepted as a number


@pytest.mark.parametrize(
    ('override', 'message'),
    [
        ('optim.lrr=1', "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ('lr=1', "unknown config key 'lr' (did you mean 'optim.lr'?)"),
        ('batchsize=4', "unknown config key 'batchsize' (did you mean 'batch_size'?)"),
        ('sched.milestone=[1]', "unknown config key 'sched.milestone' (did you mean 'sched.milestones'?)"),
        ('epochs=two', "config key 'epochs' expects an integer, got 'two'"),
        ('pretrained=1', "config key 'pretrained' expects true or false, got 1"),
        (
            'sched.name=cosin',
            "config key 'sched.name' must be one of step, cosine, onecycle, constant; got 'cosin'",
        ),
        ('data.val_split=test', "data.val_split is 'test': model selection must use val or train-fullsup"),
        ('select_metric=maxboxacc', "did you mean 'max_box_acc'?"),
        ('epochs', "override 'epochs' is not of the form key=value"),
        ('batch_size=0', "config key 'batch_size' must be >= 1, got 0"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(BASE, [override])
    assert message in str(err.value) and '\n' not in str(err.value)


def test_unknown_key_in_a_recipe_file(tmp_path):
    path = tmp_path / 'r.yaml'
    path.write_text('model: resnet10t\noptim:\n  nesterof: true\n')
    with pytest.raises(
        ConfigError, match=r"unknown config key 'optim\.nesterof' \(did you mean 'optim\.nesterov'\?\)"
    ):
        load_config(path)


def test_train_fullsup_is_a_valid_selection_split():
    assert load_config(BASE, ['data.val_split=train-fullsup']).data.val_split == 'train-fullsup'


# ---------------------------------------------------------------------------------------------------------
# schedule and parameter groups


def test_step_schedule_counts_whole_epochs():
    cfg = SchedConfig(name='step', milestones=[2, 4], gamma=0.1)
    factors = [lr_factor(cfg, step, steps_per_epoch=10, total_steps=60) for step in (0, 19, 20, 39, 40, 59)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_onecycle_and_warmup_shapes():
    cos = SchedConfig(name='cosine', min_lr_mult=0.1)
    assert lr_factor(cos, 0, 10, 100) == pytest.approx(1.0)
    assert lr_factor(cos, 50, 10, 100) == pytest.approx(0.55)
    assert lr_factor(cos, 100, 10, 100) == pytest.approx(0.1)
    one = SchedConfig(name='onecycle', pct_start=0.25)
    values = [lr_factor(one, s, 10, 100) for s in range(100)]
    assert (
        values[0] == pytest.approx(1 / 25) and max(values) == pytest.approx(1.0) and values.index(1.0) == 25
    )
    assert values[-1] < 0.01
    warm = SchedConfig(name='constant', warmup_epochs=2)
    assert [lr_factor(warm, s, 10, 100) for s in (0, 9, 19, 20)] == pytest.approx([0.05, 0.5, 1.0, 1.0])


def test_head_group_rates_and_decay():
    model = timm.create_model('resnet10t', num_classes=3, channels=(8, 16, 32, 64), stem_width=8)
    head = head_param_names(model, ['layer4'], new_params={'conv1.0.weight'})
    assert {'fc.weight', 'fc.bias', 'conv1.0.weight'} <= head  # classifier (pretrained_cfg) + new params
    assert {n for n, _ in model.named_parameters() if n.startswith('layer4.')} <= head
    assert not any(n.startswith('layer3.') for n in head)
    with pytest.raises(ConfigError, match=r"pattern 'layer5' matches no parameter.*did you mean 'layer4'"):
        head_param_names(model, ['layer5'])

    cfg = load_config(BASE, ['optim.lr=0.1', 'optim.lr_head_mult=10', 'optim.lr_backbone_mult=0.5']).optim
    opt, peaks = build_optimizer(model, cfg, head)
    rate = {id(p): g['lr'] for g in opt.param_groups for p in g['params']}
    params = dict(model.named_parameters())
    assert rate[id(params['fc.weight'])] == pytest.approx(1.0)
    assert rate[id(params['layer1.0.conv1.weight'])] == pytest.approx(0.05)
    assert sorted(peaks) == sorted(g['lr'] for g in opt.param_groups)

    cfg.decay_norm_bias = False  # decay kernels only (junsukchoe/ADL)
    opt, _ = build_optimizer(model, cfg, head)
    decay = {id(p): g['weight_decay'] for g in opt.param_groups for p in g['params']}
    assert decay[id(params['fc.bias'])] == 0 and decay[id(params['bn1.weight'])] == 0
    assert decay[id(params['fc.weight'])] == cfg.weight_decay


# ---------------------------------------------------------------------------------------------------------
# sampler and per-item seeding


def test_ranks_split_the_single_process_batches():
    single = list(GlobalBatchSampler(10, 4, seed=5))
    assert len(single) == 2  # 10 // 4, the short last batch dropped
    ranks = [list(GlobalBatchSampler(10, 4, rank=r, world_size=2, seed=5)) for r in range(2)]
    for step, batch in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == batch
    resumed = GlobalBatchSampler(10, 4, seed=5)
    resumed.set_epoch(0, start_step=1)
    assert list(resumed) == single[1:] and len(resumed) == 1
    other = GlobalBatchSampler(10, 4, seed=5)
    other.set_epoch(1)
    assert [i for b in other for _, i in b] != [i for b in single for _, i in b]
    with pytest.raises(ValueError, match='divisible'):
        GlobalBatchSampler(10, 3, world_size=2)


class _RandomItems(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return torch.rand(2), random.random(), float(np.random.rand())


def test_items_are_seeded_by_epoch_and_index_only():
    ds = SeededDataset(_RandomItems(), seed=1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = ds[(0, 2)]
    assert torch.equal(torch.get_rng_state(), state)  # the training generator (ADL's) is untouched
    torch.manual_seed(123)
    random.seed(9)
    b = ds[(0, 2)]
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    assert not torch.equal(ds[(1, 2)][0], a[0]) and not torch.equal(ds[(0, 3)][0], a[0])


# ---------------------------------------------------------------------------------------------------------
# checkpoint files


def test_resume_point_pairs(tmp_path):
    sd = {'w': torch.ones(2)}
    save_resume_point(tmp_path, 4, sd, {'step': 4})
    save_resume_point(tmp_path, 8, sd, {'step': 8})
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # the previous pair is kept as a fallback
        'state-000000004.pt',
        'state-000000008.pt',
        'weights-000000004.safetensors',
        'weights-000000008.safetensors',
    ]
    (tmp_path / 'weights-000000012.safetensors').write_bytes(b'')  # a kill before the state of step 12 landed
    (tmp_path / 'state-000000016.pt').write_bytes(b'')  # or a state whose weights are gone
    weights, state = latest_resume_point(tmp_path)
    assert weights.name == 'weights-000000008.safetensors' and state.name == 'state-000000008.pt'
    mode = (tmp_path / 'state-000000008.pt').stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600


# ---------------------------------------------------------------------------------------------------------
# the CLI: one line, exit code 2, before any work


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=1)
    return root


def _recipe(tmp_path: Path, data_root: Path, **extra: str) -> Path:
    lines = {'model': 'resnet10t', 'data': f'{{name: wsol-metadata, root: {data_root}}}', 'img_size': '32'}
    lines.update(extra, output_dir=str(tmp_path / 'out'))
    path = tmp_path / 'recipe.yaml'
    path.write_text(''.join(f'{k}: {v}\n' for k, v in lines.items()))
    return path


@pytest.mark.parametrize(
    ('extra', 'overrides', 'message'),
    [
        ({'optim': '{lrr: 0.1}'}, [], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (
            {},
            ['model=resnet10x'],
            "unknown model 'resnet10x': timm has no model of that name (close matches: resnet10t",
        ),
        ({}, ['data.root=/no/such/dir'], 'data.root: data directory not found: /no/such/dir'),
        ({}, ['data.val_split=valid'], 'data.val_split: unknown split of'),
        (
            {},
            ['initial_checkpoint=/no/w.safetensors'],
            'initial_checkpoint: file not found: /no/w.safetensors',
        ),
        ({'model_kwargs': '{no_such_arg: 1}'}, [], "rejected model_kwargs {'no_such_arg': 1}"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, data_root, capsys, extra, overrides, message):
    recipe = _recipe(tmp_path, data_root, **extra)
    assert main(['train', str(recipe), *overrides, '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith('timm-adl train: error: ') and err.count('\n') == 1, err
    assert message in err
    assert not (tmp_path / 'out' / 'resume').exists()  # failed before any training


def test_cli_missing_and_broken_recipe_files(tmp_path, capsys):
    assert main(['train', str(tmp_path / 'nope.yaml')]) == 2
    assert 'recipe file not found' in capsys.readouterr().err
    bad = tmp_path / 'bad.yaml'
    bad.write_text('model: [unclosed\n')
    assert main(['train', str(bad)]) == 2
    assert 'is not valid YAML' in capsys.readouterr().err


@pytest.mark.slow
def test_cli_process_exits_without_traceback(tmp_path, data_root):
    recipe = _recipe(tmp_path, data_root)
    proc = subprocess.run(
        [sys.executable, '-m', 'timm_adl', 'train', str(recipe), 'model=resnet10x'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr and proc.stderr.count('\n') == 1
    assert "unknown model 'resnet10x'" in proc.stderr
