"""``insertion_points``, the ``poolN`` / ``last`` aliases and the ``timm-adl points`` command."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from timm_adl import InsertionPoint, insert, insertion_points
from timm_adl.cli import main


def _meta_model(name: str) -> torch.nn.Module:
    """Shapes are all the analysis needs: build on the meta device (no memory, no init)."""
    with torch.device('meta'):
        return timm.create_model(name)


def _aliases(points: list[InsertionPoint]) -> dict[str, str]:
    return {alias: p.name for p in points if p.alias for alias in p.alias.split(',')}


EXPECTED = {
    # VGG: the max-pools themselves; pool5 is also the last feature map
    'vgg16': {
        'pool1': 'features.4',
        'pool2': 'features.9',
        'pool3': 'features.16',
        'pool4': 'features.23',
        'pool5': 'features.30',
        'last': 'features.30',
    },
    # ResNet: stem conv (after its norm and act), max-pool, then the block whose strided conv halves the map
    'resnet50': {
        'pool1': 'act1',
        'pool2': 'maxpool',
        'pool3': 'layer2.0',
        'pool4': 'layer3.0',
        'pool5': 'layer4.0',
        'last': 'layer4.2',
    },
    # MobileNet / EfficientNet: the first block at the new stride (EfficientNet's stage 4 keeps stride 16)
    'mobilenetv1_100': {
        'pool1': 'bn1',
        'pool2': 'blocks.1.0',
        'pool3': 'blocks.2.0',
        'pool4': 'blocks.3.0',
        'pool5': 'blocks.4.0',
        'last': 'blocks.4.1',
    },
    'efficientnet_b0': {
        'pool1': 'bn1',
        'pool2': 'blocks.1.0',
        'pool3': 'blocks.2.0',
        'pool4': 'blocks.3.0',
        'pool5': 'blocks.5.0',
        'last': 'bn2',
    },
    # ConvNeXt: a stride-4 stem is two halvings (no pool1), then each stage's down-sampling layer
    'convnext_atto': {
        'pool2': 'stem',
        'pool3': 'stages.1.downsample',
        'pool4': 'stages.2.downsample',
        'pool5': 'stages.3.downsample',
        'last': 'stages.3.blocks.1',
    },
    # Inception: the reduction blocks; 299 input, so 'valid' convs shrink maps without adding halvings
    'inception_v3': {
        'pool1': 'Conv2d_1a_3x3',
        'pool2': 'Pool1',
        'pool3': 'Pool2',
        'pool4': 'Mixed_6a',
        'pool5': 'Mixed_7a',
        'last': 'Mixed_7c',
    },
}


@pytest.mark.parametrize('name', list(EXPECTED))
def test_aliases_resolve_to_the_documented_points(name: str) -> None:
    model = _meta_model(name)
    size = model.pretrained_cfg['input_size']
    assert _aliases(insertion_points(model, size)) == EXPECTED[name]


def test_insertion_points_fields() -> None:
    model = _meta_model('resnet18')
    points = insertion_points(model, (3, 64, 64))
    by_alias = {p.alias: p for p in points}
    assert by_alias['pool4'] == InsertionPoint('pool4', 'layer3.0.act2', 'layer3.0', (256, 4, 4), 16)
    assert [p.stride for p in points] == sorted(p.stride for p in points)
    assert len({p.name for p in points}) == len(points)
    # one block boundary per ResNet block, plus the stem
    assert {p.module for p in points} >= {f'layer{i}.{j}' for i in range(1, 5) for j in range(2)}
    # non-square input: H and W follow
    tall = {p.alias: p for p in insertion_points(model, (3, 96, 64))}
    assert tall['pool4'].shape == (256, 6, 4)


def test_points_of_an_adl_model_keep_their_names() -> None:
    torch.manual_seed(0)
    base = timm.create_model('resnet18')
    model = insert(base, after=['pool4'])
    assert _aliases(insertion_points(model, (3, 64, 64))) == _aliases(insertion_points(base, (3, 64, 64)))


@pytest.mark.parametrize('name', ['vit_tiny_patch16_224'])
def test_token_models_have_no_pool3_and_no_last(name: str) -> None:
    """A ViT has one NCHW map (its patch embedding, stride 16) and tokens at one stride: no down-sampling.

    (Swin was listed here until issue 11: its channels-last stages now get poolN / last, see
    tests/test_insert_tokens.py.)
    """
    aliases = _aliases(insertion_points(_meta_model(name)))
    assert 'pool3' not in aliases and 'last' not in aliases


def test_input_size_is_checked() -> None:
    with pytest.raises(ValueError, match='input_size'):
        insertion_points(_meta_model('resnet18'), (224, 224))


def test_cli_points_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['points', 'resnet18', '--input-size', '3', '64', '64', '--aliases']) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ['alias', 'node']
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows['pool4'][2] == 'layer3.0' and rows['pool4'][-1] == '16'
    assert set(rows) == {'pool1', 'pool2', 'pool3', 'pool4', 'pool5', 'last'}


def test_cli_points_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['points', 'mobilenetv1_100', '--input-size', '3', '64', '64', '--json']) == 0
    rows = json.loads(capsys.readouterr().out)
    pool4 = next(r for r in rows if r['alias'] == 'pool4')
    assert pool4['module'] == 'blocks.3.0' and pool4['stride'] == 16 and len(pool4['shape']) == 3


def test_cli_points_unknown_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(['points', 'resnet5O']) == 2
    err = capsys.readouterr().err
    assert "unknown timm model 'resnet5O'" in err and 'resnet50' in err


def test_cli_prints_cam_offset(capsys):
    from timm_adl.cli import main

    assert main(['points', 'resnet18', '--aliases', '--input-size', '3', '64', '64', '--cam-offset']) == 0
    out = capsys.readouterr().out
    assert 'pool4' in out
    assert 'CAM geometry at 64x64: 2x2 cells, stride 32x32 px' in out
