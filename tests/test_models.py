"""The four paper backbones and their ADL twins in timm's registry: shapes, timm's classifier contract,
zero parameter overhead, ADL placement, and ImageNet-weight loading (offline, from random base weights)."""

import copy
import json
import os
import subprocess
import sys
import textwrap
from functools import cache

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import timm_adl

BASELINES = timm_adl.models.BASELINES
ALL_NAMES = sorted([*BASELINES, *BASELINES.values()])

# Where each ADL model puts ADL by default, and with which gamma.
EXPECTED_POINTS = {
    'vgg16_gap_adl': (('features.16', 'features.23', 'features.29'), 0.8),
    'resnet50_se_adl': (('layer3.0', 'layer4.0', 'layer4.2'), 0.9),
    'mobilenetv1_adl': (('blocks.3.0', 'blocks.4.0', 'blocks.4.1'), 0.95),
    'inception_v3_adl': (('Mixed_5d', 'Mixed_6e', 'SPG_A3_2b'), 0.8),
}
# The timm checkpoint each family derives from, and the keys of layers that checkpoint does not have.
BASE_CHECKPOINT = {
    'vgg16_gap': ('vgg16.tv_in1k', ('conv6.', 'head.fc.')),
    'resnet50_se': ('seresnet50.a1_in1k', ()),
    'mobilenetv1_wsol': ('mobilenetv1_100.ra4_e3600_r224_in1k', ()),
    'inception_v3_wsol': ('inception_v3.tv_in1k', ('SPG_A3_', 'fc.')),
}
BASE_OF = {**{b: b for b in BASE_CHECKPOINT}, **{a: b for a, b in BASELINES.items()}}

torch.set_num_threads(min(2, torch.get_num_threads()))


@cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name).eval()


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _base_state_dict(name: str, tmp_path) -> tuple[str, dict[str, torch.Tensor]]:
    """Random weights of the timm model a family derives from, saved as safetensors."""
    checkpoint, _ = BASE_CHECKPOINT[BASE_OF[name]]
    arch = checkpoint.split('.')[0]
    # vgg16's 7x7 'fc6' ConvMlp alone is 400 MB; its keys are kept but made thin: the filter drops them whatever
    # their shape, and every tensor vgg16_gap shares with vgg16 keeps its full shape.
    kwargs = dict(mlp_ratio=1 / 1024) if arch == 'vgg16' else {}
    torch.manual_seed(1)
    base = timm.create_model(arch, **kwargs)
    state_dict = {k: v.contiguous() for k, v in base.state_dict().items()}
    path = os.path.join(tmp_path, f'{arch}.safetensors')
    save_file(state_dict, path)
    return path, state_dict


def _assert_backbone_landed(model: nn.Module, base_sd: dict[str, torch.Tensor], new_prefixes: tuple) -> None:
    loaded = 0
    for key, value in model.state_dict().items():
        if new_prefixes and key.startswith(new_prefixes):
            continue
        assert key in base_sd, f'{key} is neither in the base checkpoint nor a new layer'
        assert torch.equal(value, base_sd[key]), f'{key} did not load from the base checkpoint'
        loaded += 1
    assert loaded > 0


def test_registered_on_import():
    assert set(timm.list_models('*_adl')) == set(BASELINES)
    for adl_name, baseline in BASELINES.items():
        stem = adl_name.removesuffix('_adl')
        assert baseline in (stem, f'{stem}_wsol')  # the naming rule users and scripts rely on
        assert timm.is_model(adl_name) and timm.is_model(baseline)
    for name in ALL_NAMES:
        assert timm.models.model_entrypoint(name).__module__.startswith('timm_adl.models.')
    for module in ('wsol_vgg', 'wsol_resnet', 'wsol_mobilenet', 'wsol_inception'):
        # A module name shared with timm would list timm's models here as well.
        assert len(timm.list_models(module=module)) == 2


@pytest.mark.parametrize('name', ALL_NAMES)
def test_forward_and_classifier_contract(name):
    model = _model(name)
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 224, 224))
        logits = model.forward_head(feats)
        small = torch.randn(1, 3, 64, 64)
        assert torch.equal(model(small), model.forward_head(model.forward_features(small)))
    fc = model.get_classifier()
    assert isinstance(fc, nn.Linear)
    # The CAM resolution the papers use: 14x14 at 224 for all four (SPG trunk included).
    assert feats.shape == (1, model.num_features, 14, 14)
    assert logits.shape == (1, model.num_classes) == (1, 1000)
    assert fc.in_features == model.num_features
    # GAP + linear: the logits are the spatial mean of the class maps sum_c w[k, c] F[c] + b_k (the CAMs).
    cams = torch.einsum('kc,nchw->nkhw', fc.weight, feats) + fc.bias[:, None, None]
    scale = logits.abs().max().item()  # randomly initialised trunks can give large logits
    torch.testing.assert_close(cams.mean(dim=(2, 3)), logits, rtol=0, atol=1e-5 * scale)
    assert model.feature_info[-1]['reduction'] == 16
    assert model.feature_info[-1]['num_chs'] == model.num_features
    cfg = model.pretrained_cfg
    assert cfg['architecture'] == name and cfg['tag'] == 'in1k_init'
    assert cfg['pool_size'] == (14, 14) and cfg['input_size'] == (3, 224, 224)


@pytest.mark.parametrize('name', ['vgg16_gap_adl', 'inception_v3_adl', 'mobilenetv1_adl'])
def test_reset_classifier(name):
    model = copy.deepcopy(_model(name))
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier().out_features == 7
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert model(x).shape == (1, 7)
        model.reset_classifier(0)  # timm's convention: no classifier, the pooled features come out
        assert model(x).shape == (1, model.num_features)


@pytest.mark.parametrize('adl_name', sorted(BASELINES))
def test_features_only(adl_name):
    model = timm.create_model(adl_name, features_only=True, out_indices=(-2, -1)).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert model.feature_info.reduction() == [16, 16]
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    assert [m.shape[-1] for m in maps] == [4, 4]
    assert len(timm_adl.adl_points(model)) == 3


@pytest.mark.parametrize('adl_name', sorted(BASELINES))
def test_adl_twin_matches_baseline(adl_name):
    base, adl = _model(BASELINES[adl_name]), _model(adl_name)
    assert _n_params(adl) == _n_params(base)  # the paper's zero parameter overhead
    assert list(adl.state_dict()) == list(base.state_dict())
    adl.load_state_dict(base.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(adl(x), base(x))  # ADL is the identity in eval mode
        base.train(), adl.train()
        try:
            torch.manual_seed(0)
            train_base = base(x)
            torch.manual_seed(0)
            train_adl = adl(x)
        finally:
            base.eval(), adl.eval()
    assert not torch.equal(train_adl, train_base)


@pytest.mark.parametrize('adl_name', sorted(BASELINES))
def test_adl_points_default(adl_name):
    points, gamma = EXPECTED_POINTS[adl_name]
    expected = {p: {'drop_rate': 0.75, 'gamma': gamma, 'per_sample': False} for p in points}
    assert timm_adl.adl_points(_model(adl_name)) == expected
    assert sum(isinstance(m, timm_adl.ADL) for m in _model(adl_name).modules()) == 3
    assert not any(isinstance(m, timm_adl.ADL) for m in _model(BASELINES[adl_name]).modules())


def test_adl_kwargs_honoured():
    model = timm.create_model('mobilenetv1_adl', adl_after=['blocks.2.0'], adl_gamma=0.7, adl_drop_rate=0.5)
    assert timm_adl.adl_points(model) == {'blocks.2.0': {'drop_rate': 0.5, 'gamma': 0.7, 'per_sample': False}}
    model = timm.create_model('mobilenetv1_adl', adl_after={'blocks.4.1': dict(gamma=0.6, per_sample=True)})
    assert timm_adl.adl_points(model) == {'blocks.4.1': {'drop_rate': 0.75, 'gamma': 0.6, 'per_sample': True}}
    with pytest.raises(ValueError, match='gamma'):
        timm.create_model('mobilenetv1_adl', adl_gamma=1.5)


@pytest.mark.parametrize('name', sorted(BASELINES))
def test_pretrained_from_file(name, tmp_path):
    path, base_sd = _base_state_dict(name, tmp_path)
    new_prefixes = BASE_CHECKPOINT[BASE_OF[name]][1]
    model = timm.create_model(name, pretrained=True, num_classes=200, pretrained_cfg_overlay=dict(file=path))
    _assert_backbone_landed(model, base_sd, (*new_prefixes, 'fc.', 'head.fc.', 'classifier.'))
    assert model.get_classifier().out_features == 200
    if not new_prefixes:
        # Same class count as the checkpoint: the ImageNet classifier loads too (ResNet, MobileNet).
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))
        _assert_backbone_landed(model, base_sd, ())


def test_pretrained_cfg_points_at_timm_weights():
    for name in ALL_NAMES:
        checkpoint, _ = BASE_CHECKPOINT[BASE_OF[name]]
        cfg = _model(name).pretrained_cfg
        source = timm.models.get_pretrained_cfg(checkpoint)
        assert cfg['hf_hub_id'] == source.hf_hub_id == f'timm/{checkpoint}'
        assert (cfg['mean'], cfg['std'], cfg['interpolation']) == (
            source.mean,
            source.std,
            source.interpolation,
        )
        assert cfg['classifier'] in ('fc', 'head.fc', 'classifier')
        assert checkpoint in timm.list_pretrained(checkpoint.split('.')[0] + '*')


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys, warnings
    import timm
    names = sys.argv[2:]
    before = (set(timm.list_modules()), [timm.is_model(n) for n in names])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        import timm_adl
    model = timm.create_model('resnet50_se_adl', pretrained=True, num_classes=200)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])
    print(json.dumps(dict(
        timm_modules=sorted(before[0]), registered_before=before[1],
        new_modules=sorted(set(timm.list_modules()) - before[0]),
        overwrite_warnings=[str(w.message) for w in caught if 'Overwriting' in str(w.message)],
        source=model.pretrained_cfg['hf_hub_id'], classes=model.num_classes)))
    """
)


@pytest.mark.slow
def test_fresh_process_offline_hf_cache(tmp_path):
    """A fresh process: registration on `import timm_adl` alone, no name clash with timm, and
    `create_model('resnet50_se_adl', pretrained=True, num_classes=200)` reading timm's checkpoint from a
    Hugging Face cache, offline."""
    path, base_sd = _base_state_dict('resnet50_se_adl', tmp_path)
    hub = tmp_path / 'hf' / 'hub'
    repo = hub / 'models--timm--seresnet50.a1_in1k'
    sha = '0123456789abcdef0123456789abcdef01234567'
    (repo / 'snapshots' / sha).mkdir(parents=True)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(sha)
    os.replace(path, repo / 'snapshots' / sha / 'model.safetensors')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path / 'hf'), HF_HUB_CACHE=str(hub))
    env.pop('HF_TOKEN', None)
    out_path = tmp_path / 'loaded.safetensors'
    proc = subprocess.run(
        [sys.executable, '-c', _SUBPROCESS, str(out_path), *ALL_NAMES],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report['registered_before'] == [False] * len(ALL_NAMES)
    assert report['overwrite_warnings'] == []
    ours = {'wsol_vgg', 'wsol_resnet', 'wsol_mobilenet', 'wsol_inception'}
    assert ours <= set(report['new_modules']) and not ours & set(report['timm_modules'])
    assert report['source'] == 'timm/seresnet50.a1_in1k' and report['classes'] == 200
    loaded = load_file(out_path)
    assert set(loaded) == set(base_sd)
    for key, value in loaded.items():
        if not key.startswith('fc.'):
            assert torch.equal(value, base_sd[key]), key


@pytest.mark.slow
def test_resnet50_se_adl_compiles_without_graph_breaks():
    model = timm.create_model('resnet50_se_adl').train()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 64, 64))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
