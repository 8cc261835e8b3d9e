"""The trainer's TrainState: the resume file's payload keeps its version-1 keys, and old runs still resume."""

from __future__ import annotations

import pytest
import yaml

from timm_adl.train import ConfigError, load_config
from timm_adl.train.config import config_to_dict
from timm_adl.train.engine import _check_resume_config
from timm_adl.train.state import STATE_VERSION, TrainState

# The keys every version-1 state file holds besides optimizer, scaler and rng (the pre-TrainState dict).
V1_KEYS = [
    'version', 'step', 'epoch', 'step_in_epoch', 'best', 'history', 'epoch_loss', 'train_seconds',
    'val_seconds', 'world_size',
]  # fmt: skip


def test_payload_keeps_version_one_keys_and_round_trips():
    state = TrainState(step=7, epoch=1, step_in_epoch=3, best={'epoch': 1, 'metrics': {'top1_clas': 50.0}})
    state.history.append({'epoch': 1, 'train_loss': 0.5})
    payload = state.to_payload()
    assert list(payload) == V1_KEYS and STATE_VERSION == 1
    saved = {**payload, 'optimizer': {}, 'scaler': None, 'rng': []}
    assert TrainState.from_payload(saved) == state


def test_fresh_values_fill_missing_keys_and_other_versions_are_refused():
    assert TrainState.from_payload({'version': 1, 'step': 2}, world_size=4) == TrainState(
        step=2, world_size=4
    )
    with pytest.raises(ConfigError, match=r'^state-1\.pt is a training state of another version \(2\)$'):
        TrainState.from_payload({'version': 2}, 'state-1.pt')


def test_fresh_states_do_not_share_lists():
    a, b = TrainState(), TrainState()
    a.history.append({}), a.epoch_loss.__setitem__(0, 1.0)
    assert b.history == [] and b.epoch_loss == [0.0, 0]


def test_resume_accepts_a_config_saved_before_new_keys(tmp_path):
    cfg = load_config(dict(model='resnet18', data=dict(root='x'), output_dir=str(tmp_path)))
    old = config_to_dict(cfg)
    for key in ('cycle_momentum', 'base_momentum', 'max_momentum'):  # added after 0.1.0
        del old['sched'][key]
    path = tmp_path / 'config.yaml'
    path.write_text(yaml.safe_dump(old))
    _check_resume_config(cfg, path)  # no error: a missing key is its default
    old['sched']['gamma'] = 0.5
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match=r'sched\.gamma: 0\.5 -> 0\.1'):
        _check_resume_config(cfg, path)
