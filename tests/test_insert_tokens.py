"""ADL inserted on token (ViT, DeiT) and channels-last (Swin, MambaOut) maps: points, layouts, semantics."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
from torch import nn

from timm_adl import ADL, adl_points, insert, insertion_points, remove


def _build(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=5, **kwargs).eval()


def _vit() -> nn.Module:  # a 2-block ViT on 32 px: 4x4 patch grid + class token
    return _build('vit_tiny_patch16_224', img_size=32, patch_size=8, depth=2)


def test_vit_points_are_tokens_with_their_prefix() -> None:
    points = {p.name: p for p in insertion_points(_vit(), (3, 32, 32))}
    block = points['blocks.0']
    assert (block.layout, block.num_prefix_tokens, block.shape, block.channels, block.stride) == (
        'NLC',
        1,
        (17, 192),
        192,
        8,
    )
    assert not any(p.alias for p in points.values())  # one stride only: no poolN / last, name the blocks


def test_vit_block_gets_token_adl_equal_to_the_nchw_layer() -> None:
    base = _vit()
    model = insert(base, after=['blocks.0'], drop_rate=0.5, gamma=0.8)
    adl = model.get_submodule('blocks.0_adl')
    assert (adl.layout, adl.num_prefix_tokens) == ('NLC', 1)
    seen = {}
    adl.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))  # eval: identity
        model.train()
        for seed in range(4):
            torch.manual_seed(seed)
            model(x)
            tokens, out = seen['x'], seen['y']
            grid = tokens[:, 1:].transpose(1, 2).reshape(2, 192, 4, 4)
            torch.manual_seed(seed)
            expected = ADL(0.5, 0.8).train()(grid)
            assert torch.equal(out[:, :1], tokens[:, :1])  # the class token passes unchanged
            assert torch.equal(out[:, 1:], expected.flatten(2).transpose(1, 2))


def test_deit_keeps_both_prefix_tokens() -> None:
    base = _build('deit_tiny_distilled_patch16_224', img_size=32, patch_size=8, depth=2)
    model = insert(base, after=['blocks.1'])
    assert model.get_submodule('blocks.1_adl').num_prefix_tokens == 2


@pytest.mark.slow
def test_swin_channels_last_aliases_and_checks() -> None:
    base = _build('swin_tiny_patch4_window7_224', depths=(1, 1, 1, 1), embed_dim=24, num_heads=(1, 1, 1, 1))
    aliases = {a: p for p in insertion_points(base) if p.alias for a in p.alias.split(',')}
    assert {'pool3', 'pool4', 'pool5', 'last'} <= set(aliases)
    assert aliases['pool3'].layout == 'NHWC' and aliases['pool3'].stride == 8
    model = insert(base, after=['pool3', 'pool4'])
    adls = [m for m in model.modules() if isinstance(m, ADL)]
    assert [a.layout for a in adls] == ['NHWC', 'NHWC']
    assert list(model.state_dict()) == list(base.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), base(x))
        assert torch.equal(remove(model)(x), base(x))
        model.train()
        base.train()
        torch.manual_seed(0)
        assert not torch.equal(model(x), base(x))
    rebuilt = insert(base, after=adl_points(model))
    assert adl_points(rebuilt) == adl_points(model)
    pickle.loads(pickle.dumps(model))


def test_adl_refuses_a_point_without_a_grid() -> None:
    with pytest.raises(ValueError, match='not a 4-D'):
        insert(_vit(), after=['head'])
