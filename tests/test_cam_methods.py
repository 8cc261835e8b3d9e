"""CAM methods beyond GAP + linear: the dense head, Grad-CAM, token and channels-last feature layouts."""

import pytest
import timm
import torch
import torch.nn as nn

from timm_adl.cam import CAM_METHODS, CamResult, compute_cams
from timm_adl.cam_heads import branch_layouts, dense_head_gap, dense_head_logits, feature_layout, to_grid


def _model(name, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5, **kwargs)
    for m in model.modules():  # timm zero-initialises some last norms: give them weights, as training would
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
            nn.init.uniform_(m.weight, 0.5, 1.5)
    return model.eval()


@pytest.fixture(scope='module')
def tiny_resnet():
    return _model('resnet10t', channels=(8, 8, 16, 16), stem_width=8)


@pytest.fixture(scope='module')
def tiny_vit():
    """Class-token ViT: 1 block, 16 px patches on 64 px inputs, a 4x4 grid."""
    return _model('vit_tiny_patch16_224', img_size=64, depth=1, embed_dim=32, num_heads=2)


@pytest.fixture(scope='module')
def tiny_swin():
    """Channels-last (N, h, w, C) features: a 2x2 grid at 64 px."""
    return _model(
        'swin_tiny_patch4_window7_224', img_size=64, window_size=2, depths=(1, 1, 1, 1), embed_dim=16
    )


def _x(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_maps(res: CamResult, n: int, size: int):
    for cams in (res.cams_gt, res.cams_top1):
        assert cams.shape == (n, size, size) and cams.dtype == torch.float32
        assert torch.isfinite(cams).all() and cams.min() >= 0 and (cams.amax((1, 2)) == 1).all()


def test_methods_listed_and_unknown_method_named(tiny_resnet):
    assert CAM_METHODS == ('cam', 'gradcam')
    with pytest.raises(ValueError, match=r"method='gradcm'.*\('cam', 'gradcam'\).*did you mean 'gradcam'"):
        compute_cams(tiny_resnet, _x(), method='gradcm')


def test_gradcam_equals_cam_on_gap_linear(tiny_resnet):
    """Grad-CAM's channel weights on a GAP + linear head are w[k] / hw: after min-max normalisation the
    maps are the reference CAM's (no ReLU on either)."""
    x, labels = _x(4), torch.tensor([0, 3, 4, 1])
    cam = compute_cams(tiny_resnet, x, labels)
    grad = compute_cams(tiny_resnet, x, labels, method='gradcam')
    assert cam.method == 'cam' and grad.method == 'gradcam'
    torch.testing.assert_close(grad.logits, cam.logits)
    assert torch.equal(grad.top1, cam.top1)
    torch.testing.assert_close(grad.cams_gt, cam.cams_gt, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad.cams_top1, cam.cams_top1, atol=1e-5, rtol=0)
    hw, c = cam.raw_gt.shape[-2] * cam.raw_gt.shape[-1], 16
    torch.testing.assert_close(grad.raw_gt, cam.raw_gt * c / hw, rtol=1e-4, atol=1e-6)


def test_gradcam_under_no_grad_and_inference_mode_leaves_no_grads(tiny_resnet):
    x = _x()
    free = compute_cams(tiny_resnet, x, method='gradcam')
    with torch.no_grad():
        res = compute_cams(tiny_resnet, x, method='gradcam')
    with torch.inference_mode():
        inf = compute_cams(tiny_resnet, x, method='gradcam')
    assert torch.equal(res.cams_top1, free.cams_top1) and torch.equal(inf.cams_top1, free.cams_top1)
    assert all(p.grad is None for p in tiny_resnet.parameters())
    assert not tiny_resnet.training and torch.is_grad_enabled()
    assert not res.logits.requires_grad and not res.raw_top1.requires_grad


def test_max_pool_head_refused_for_cam_but_gradcam_maps_it():
    model = _model('resnet10t', channels=(8, 8, 16, 16), stem_width=8, global_pool='max')
    with pytest.raises(ValueError, match=r"pool_type='max'.*method='gradcam'"):
        compute_cams(model, _x())
    _assert_maps(compute_cams(model, _x(), torch.tensor([0, 1]), method='gradcam'), 2, 64)


def test_dense_head_is_exact_for_linear_layers_after_pooling():
    """ConvNeXt's head is pool -> LayerNorm -> linear: the per-cell map's mean is not the logit. With the
    norm replaced by an affine map it is linear, and the mean of the per-cell logits equals the logits."""
    model = _model('convnext_atto', dims=(8, 8, 16, 16), depths=(1, 1, 1, 1))
    x = _x()
    assert dense_head_gap(model, x) > 1e-3
    res = compute_cams(model, x, torch.tensor([1, 2]))
    _assert_maps(res, 2, 64)
    # per-cell scores, gathered: raw maps are the dense head's
    with torch.no_grad():
        feats = model.forward_features(x)
        layout = feature_layout(model, feats, (64, 64))
        dense = dense_head_logits(model, feats, layout, model.forward_head(feats))
    torch.testing.assert_close(res.raw_gt, dense[[0, 1], [1, 2]])
    # one cell, fed alone as a 1x1 map through the real head, gives the same scores
    with torch.no_grad():
        one = model.forward_head(feats[:1, :, 1:2, 0:1])
    torch.testing.assert_close(dense[0, :, 1, 0], one[0])
    model.head.norm = nn.Identity()  # pool -> linear: exact
    assert dense_head_gap(model, x) < 1e-5


def test_mlp_and_conv_heads_get_maps():
    """MetaFormer MLP head (get_classifier() is an MlpHead) and MobileNetV3's conv_head + act."""
    from timm.models.metaformer import MetaFormer, SepConv

    torch.manual_seed(0)
    meta = MetaFormer(num_classes=5, depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), token_mixers=SepConv)
    meta.eval()
    assert type(meta.get_classifier()).__name__ == 'MlpHead'
    mobile = _model('mobilenetv3_small_050')
    for model in (meta, mobile):
        for method in CAM_METHODS:
            _assert_maps(compute_cams(model, _x(), torch.tensor([0, 4]), method=method), 2, 64)


def test_token_model_maps_on_patch_grid(tiny_vit):
    x = _x()
    with torch.no_grad():
        feats = tiny_vit.forward_features(x)
    layout = feature_layout(tiny_vit, feats, (64, 64))
    assert layout.kind == 'NLC' and layout.grid == (4, 4) and layout.num_prefix_tokens == 1
    grid = to_grid(feats, layout)
    assert torch.equal(
        grid[:, :, 1, 2], feats[:, 1 + 1 * 4 + 2]
    )  # row-major patch tokens after the class token
    for method in CAM_METHODS:
        res = compute_cams(tiny_vit, x, torch.tensor([1, 3]), method=method)
        assert res.raw_gt.shape == (2, 4, 4)
        _assert_maps(res, 2, 64)
    # 'cam' is the head (fc_norm + classifier) on each patch token
    res = compute_cams(tiny_vit, x, torch.tensor([1, 3]))
    with torch.no_grad():
        per_token = tiny_vit.head(tiny_vit.fc_norm(feats[:, 1:]))  # (N, 16, K)
    torch.testing.assert_close(res.raw_gt.flatten(1), per_token[[0, 1], :, [1, 3]].reshape(2, 16))


def test_class_token_gradcam_reads_the_last_block_input(tiny_vit):
    """The class token's score has no gradient on the final patch tokens; Grad-CAM then weights the input
    of the last block, through whose attention the class token sees the patches."""
    x = _x()
    res = compute_cams(tiny_vit, x, torch.tensor([1, 3]), method='gradcam')
    assert res.raw_gt.abs().sum() > 0
    with torch.no_grad():
        logits = tiny_vit(x)
    torch.testing.assert_close(res.logits, logits)


def test_channels_last_model(tiny_swin):
    x = _x()
    with torch.no_grad():
        feats = tiny_swin.forward_features(x)
    assert feats.shape[1:3] == (2, 2)  # (N, h, w, C)
    assert feature_layout(tiny_swin, feats, (64, 64)).kind == 'NHWC'
    assert dense_head_gap(tiny_swin, x) < 1e-5  # Swin's norm is inside forward_features: pool -> linear
    cam = compute_cams(tiny_swin, x, torch.tensor([0, 2]))
    grad = compute_cams(tiny_swin, x, torch.tensor([0, 2]), method='gradcam')
    _assert_maps(cam, 2, 64)
    torch.testing.assert_close(grad.cams_gt, cam.cams_gt, atol=1e-5, rtol=0)  # linear head: same maps


def test_headless_and_pooled_features_are_clear_errors():
    headless = _model('convnext_atto', dims=(8, 8, 16, 16), depths=(1, 1, 1, 1))
    headless.reset_classifier(0)
    with pytest.raises(ValueError, match='Identity'):
        compute_cams(headless, _x(), method='gradcam')


def test_prefix_tokens_inferred_without_num_prefix_tokens():
    """VOLO has a class token but no ``num_prefix_tokens``: 17 tokens on a square input are 1 + 4 x 4."""
    bare = nn.Module()
    layout = feature_layout(bare, torch.zeros(1, 17, 8), (64, 64))
    assert layout.grid == (4, 4) and layout.num_prefix_tokens == 1
    assert feature_layout(bare, torch.zeros(1, 16, 8), (64, 64)).num_prefix_tokens == 0


# ----------------------------------------------------------------------------------------------------
# multi-branch token lists (CrossViT, CoaT), pooled tokens (PiT), LeViT


def _crossvit():
    """Two branches on a 64 px input: 8 px patches (8x8 grid) and 16 px patches (4x4), one block."""
    torch.manual_seed(0)
    kwargs = dict(img_size=64, img_scale=(1.0, 1.0), patch_size=[8, 16], embed_dim=[16, 16])
    kwargs.update(depth=[[1, 1, 0]], num_heads=[2, 2], mlp_ratio=[2, 2, 1])
    return timm.create_model('crossvit_tiny_240', num_classes=5, **kwargs).eval()


def test_crossvit_cam_is_the_mean_of_the_branch_heads_per_cell():
    """CrossViT's logits are the mean of one linear head per branch on its class token; 'cam' is that mean
    on every patch token, the coarse branch's map resized (bilinear) to the finest grid."""
    model, x = _crossvit(), _x()
    res = compute_cams(model, x, torch.tensor([1, 3]))
    assert res.raw_gt.shape == (2, 8, 8)
    _assert_maps(res, 2, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        per_branch = []
        for tokens, head, side in zip(feats, model.head, (8, 4), strict=True):
            scores = head(tokens[:, 1:]).transpose(1, 2).reshape(2, 5, side, side) / 2
            per_branch.append(nn.functional.interpolate(scores, size=(8, 8), mode='bilinear'))
        expect = per_branch[0] + per_branch[1]
    torch.testing.assert_close(res.raw_gt, expect[[0, 1], [1, 3]], atol=1e-5, rtol=1e-4)


def test_crossvit_gradcam_reads_both_branches_at_the_last_block():
    model, x = _crossvit(), _x()
    res = compute_cams(model, x, torch.tensor([1, 3]), method='gradcam')
    assert res.raw_gt.shape == (2, 8, 8) and res.raw_gt.abs().sum() > 0
    _assert_maps(res, 2, 64)
    with torch.no_grad():
        torch.testing.assert_close(res.logits, model(x))
    assert all(p.grad is None for p in model.parameters())


def test_pit_maps_the_last_stage_tokens():
    """PiT's forward_features returns only its class token: 'cam' is its head (norm + linear) on each
    token of the last block's output, Grad-CAM weights the last block's input (8x8 grid at 64 px)."""
    torch.manual_seed(0)
    kwargs = dict(img_size=64, patch_size=8, stride=4, base_dims=[8, 8], depth=[1, 1], heads=[2, 2])
    model = timm.create_model('pit_ti_224', num_classes=5, mlp_ratio=2, **kwargs).eval()
    x = _x()
    out = []
    handle = model.transformers[-1].blocks[-1].register_forward_hook(lambda m, a, o: out.append(o))
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 1, 16)  # no patch grid
    handle.remove()
    res = compute_cams(model, x, torch.tensor([0, 4]))
    with torch.no_grad():
        expect = model.head(model.norm(out[0][:, 1:]))  # (N, 64, K)
    assert res.raw_gt.shape == (2, 8, 8)
    torch.testing.assert_close(res.raw_gt.flatten(1), expect[[0, 1], :, [0, 4]], atol=1e-5, rtol=1e-4)
    grad = compute_cams(model, x, torch.tensor([0, 4]), method='gradcam')
    assert grad.raw_gt.shape == (2, 8, 8)
    for r in (res, grad):
        _assert_maps(r, 2, 64)


def test_coat_maps_on_its_finest_scale():
    torch.manual_seed(0)
    kwargs = dict(img_size=64, embed_dims=[16] * 4, serial_depths=[1] * 4, parallel_depth=1, num_heads=8)
    model = timm.create_model('coat_tiny', num_classes=5, mlp_ratios=[2] * 4, **kwargs).eval()
    for method in CAM_METHODS:
        res = compute_cams(model, _x(), torch.tensor([0, 4]), method=method)
        assert res.raw_gt.shape == (2, 8, 8)  # scales 2-4 (8x8, 4x4, 2x2) feed the head
        _assert_maps(res, 2, 64)


def test_levit_token_grid_and_exact_head():
    """LeViT: (N, L, C) tokens without a class token on a grid that halves per stage (2x2 at 64 px); its
    head (BatchNorm + linear, twice, averaged) is linear. timm's initial BatchNorm statistics collapse the
    untrained features to one value, so they are estimated on random inputs first, as training would."""
    torch.manual_seed(0)
    kwargs = dict(img_size=64, embed_dim=(16, 32), key_dim=8, depth=(1, 1), num_heads=(2, 2))
    model = timm.create_model('levit_128s', num_classes=5, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(_x(8, seed=1))
    model.eval()
    x = _x()
    with torch.no_grad():
        feats = model.forward_features(x)
    layout = feature_layout(model, feats, (64, 64))
    assert (layout.kind, layout.grid, layout.num_prefix_tokens) == ('NLC', (2, 2), 0)
    assert dense_head_gap(model, x) < 1e-5
    for method in CAM_METHODS:
        _assert_maps(compute_cams(model, x, torch.tensor([0, 4]), method=method), 2, 64)


def test_token_lists_that_are_no_patch_grid_are_refused():
    """EfficientViM returns per-stage hidden states (N, C, state) and its final map as (N, C, L): no list of
    patch token sets; one line says so."""
    bare = nn.Module()
    with pytest.raises(ValueError, match=r'item 0 .*\(1, 128, 49\).*fits no patch grid'):
        branch_layouts(bare, [torch.zeros(1, 128, 49)], (224, 224))
    assert [
        lay.grid for lay in branch_layouts(bare, [torch.zeros(1, 197, 8), torch.zeros(1, 50, 8)], (224, 224))
    ] == [
        (14, 14),
        (7, 7),
    ]
