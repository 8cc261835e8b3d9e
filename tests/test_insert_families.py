"""ADL in the token families that needed their own rule: NaFlexViT (blocks in an ``nn.Sequential`` but
called one by one with ``attn_mask=``), CrossViT (two parallel token branches, input resized first), and
the families whose zero-initialised classifier hid ADL's effect (MLP-Mixer, gMLP, Hiera; Sequencer's
LSTMs take minutes here, so only ``benchmarks/insert_coverage.py`` checks it)."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
from timm.layers import GatedMlp
from timm.models.mlp_mixer import MlpMixer, SpatialGatingBlock
from torch import nn

from timm_adl import ADL, adl_points, insert, insertion_points, remove
from timm_adl.points import analyse


def _randomise_zero_classifier(model: nn.Module) -> nn.Module:
    for module in model.modules():  # a trained classifier is never all-zero (timm zero-inits some)
        if isinstance(module, nn.Linear) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.02)
    return model


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_zero_classifier(timm.create_model(name, num_classes=5, **kwargs).eval())


def _check(base: nn.Module, after: list[str], size: int) -> nn.Module:
    """Eval bit-identical, train changed with every ADL called, keys kept, remove and pickle round trips."""
    model = insert(base, after=after)
    adls = [m for m in model.modules() if isinstance(m, ADL)]
    assert len(adls) == len(after)
    assert type(model) is type(base) and list(model.state_dict()) == list(base.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))
        assert torch.equal(remove(model).eval()(x), base(x))
        calls = []
        hooks = [adl.register_forward_hook(lambda *_: calls.append(1)) for adl in adls]
        model.train()
        base.train()
        torch.manual_seed(1)
        y = model(x)
        torch.manual_seed(1)
        assert not torch.equal(y, base(x))
        assert len(calls) == len(after)
        for hook in hooks:
            hook.remove()
    model.eval()
    assert adl_points(pickle.loads(pickle.dumps(model))) == adl_points(model)
    assert adl_points(insert(base, after=adl_points(model))) == adl_points(model)
    return model


def _naflexvit() -> nn.Module:
    return _build('naflexvit_base_patch16_gap', depth=2, embed_dim=32, num_heads=2, img_size=32)


def test_naflexvit_blocks_called_apart_are_no_chain() -> None:
    base = _naflexvit()
    points = analyse(base)
    assert isinstance(base.blocks, nn.Sequential) and points.called_apart('blocks')
    assert not points.is_chain('blocks') and not points.called_apart('blocks.0')
    grid = {p.name: p for p in insertion_points(base, (3, 32, 32)) if p.layout == 'NLC'}
    assert {'blocks.0', 'blocks.1'} <= set(grid)
    model = _check(base, ['blocks.0', 'blocks.1'], 32)
    assert list(model.blocks._modules) == ['0', '1']  # nothing spliced into the Sequential
    assert isinstance(model.blocks[0].adl, ADL)  # the block itself takes it (rule 5)


def test_resnet_sequential_stays_a_chain() -> None:
    base = _build('resnet18')
    points = analyse(base)
    assert points.is_chain('layer3') and not points.called_apart('layer3')
    assert 'layer3.0_adl' in dict(insert(base, after=['pool4']).named_modules())


def _crossvit() -> nn.Module:
    return _build(
        'crossvit_tiny_240',
        img_size=48,
        img_scale=(1.0, 1.0),
        patch_size=(12, 16),
        embed_dim=(16, 32),
        depth=((1, 1, 0), (1, 1, 0)),
        num_heads=(1, 1),
    )


@pytest.mark.slow
def test_crossvit_branch_blocks_are_points_on_their_own_grid() -> None:
    base = _crossvit()
    grid = {p.name: p for p in insertion_points(base, (3, 48, 48)) if p.layout == 'NLC'}
    small, large = grid['blocks.0.blocks.0.0'], grid['blocks.0.blocks.1.0']
    assert (small.shape, small.num_prefix_tokens) == ((17, 16), 1)  # 4x4 patches of 12 px + class token
    assert (large.shape, large.num_prefix_tokens) == ((10, 32), 1)  # 3x3 patches of 16 px + class token
    _check(base, ['blocks.0.blocks.0.0', 'blocks.1.blocks.1.0'], 48)


def _mixer(**kwargs) -> nn.Module:  # the timm names fix num_blocks: build the class
    torch.manual_seed(0)
    return _randomise_zero_classifier(MlpMixer(num_classes=5, num_blocks=2, embed_dim=32, **kwargs).eval())


FAMILIES = {  # a zero-initialised classifier in timm: with it the train output could not show ADL
    'mlp_mixer': (_mixer, 224),
    'gmlp': (lambda: _mixer(mlp_ratio=6, block_layer=SpatialGatingBlock, mlp_layer=GatedMlp), 224),
    'hiera': (lambda: _build('hiera_tiny_224', embed_dim=16, num_heads=1, stages=(1, 1, 1, 1)), 224),
}


@pytest.mark.slow
@pytest.mark.parametrize('family', list(FAMILIES))
def test_token_family_train_output_changes(family: str) -> None:
    """Two grid points as the coverage benchmark picks them: the middle and the last block boundary."""
    make, size = FAMILIES[family]
    base = make()
    grid = [p.name for p in insertion_points(base, (3, size, size)) if p.layout is not None and p.module]
    assert grid, f'{family}: no grid point'
    _check(base, list(dict.fromkeys([grid[len(grid) // 2], grid[-1]])), size)


def test_tnt_offers_no_point_between_its_blocks() -> None:
    """TNT's blocks return (pixel tokens, patch tokens): no single tensor, so no block boundary; its only
    patch-grid point is the final norm, which a class-token head never reads past (see docs/surgery.md)."""
    base = _build(
        'tnt_s_legacy_patch16_224', depth=2, embed_dim=32, inner_dim=8, num_heads_outer=2, num_heads_inner=2
    )
    grid = {p.name: p.layout for p in insertion_points(base) if p.layout is not None and p.module}
    assert grid == {'pixel_embed.proj': 'NCHW', 'norm': 'NLC'}
    with pytest.raises(ValueError, match='tuple'):
        insert(base, after=['blocks.0'])
