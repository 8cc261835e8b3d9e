"""CAM extraction: the reference protocol's maps, normalisation edge cases, and CAM geometry."""

import math

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

import timm_adl  # noqa: F401  (registers the paper's backbones)
from timm_adl.cam import (
    CamGeometry,
    cam_geometry,
    cam_offset,
    compute_cams,
    format_cam_geometry,
    normalize_cams,
    resize_cams,
)


def _tiny_resnet(num_classes=5, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(
        'resnet10t', num_classes=num_classes, channels=(8, 8, 16, 16), stem_width=8, **kwargs
    )
    # timm zero-initialises the last norm of each residual branch: give them weights, as training would
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


@pytest.fixture(scope='module')
def tiny_resnet():
    """Shared, so that its CAM geometry is measured once (cam_geometry caches per model and size)."""
    return _tiny_resnet()


def _reference_normalize(cam):
    """wsolevaluation's normalize_scoremap, restated."""
    cam = cam.copy()
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def _reference_cams(feats, weight, classes, size):
    """The reference pipeline per image: (w[k].view(C,1,1) * F).mean(C), cv2 INTER_CUBIC, normalise."""
    raw = (weight[classes][:, :, None, None] * feats).mean(1).numpy()
    return raw, np.stack(
        [_reference_normalize(cv2.resize(r, size, interpolation=cv2.INTER_CUBIC)) for r in raw]
    )


def test_cams_equal_hand_computed_reference():
    model = _tiny_resnet()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 4, 1])
    res = compute_cams(model, x, labels)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    weight = model.get_classifier().weight.detach()
    torch.testing.assert_close(res.logits, logits)
    assert torch.equal(res.top1, logits.argmax(1))
    for classes, raw_ours, cams_ours in (
        (labels, res.raw_gt, res.cams_gt),
        (res.top1, res.raw_top1, res.cams_top1),
    ):
        raw, cams = _reference_cams(feats, weight, classes, (64, 64))
        np.testing.assert_allclose(raw_ours.numpy(), raw, rtol=1e-5, atol=1e-6)
        # also the plain einsum of the CAM paper: sum_c w[k, c] F[c] / C
        manual = torch.einsum('nchw,nc->nhw', feats, weight[classes]) / feats.shape[1]
        torch.testing.assert_close(raw_ours, manual)
        assert cams_ours.shape == (4, 64, 64) and cams_ours.dtype == torch.float32
        # OpenCV's float32 resize rounds relative to the values, so after min-max normalisation the
        # difference is relative to max|raw| / (max - min): compare with that scale
        scale = np.abs(raw).max((1, 2)) / (raw.max((1, 2)) - raw.min((1, 2)))
        err = np.abs(cams_ours.numpy() - cams).max((1, 2))
        assert (err <= 1e-6 * scale).all(), (err, scale)
    assert res.cams_gt.amin((1, 2)).eq(0).all() and res.cams_gt.amax((1, 2)).eq(1).all()


def test_cams_without_labels_and_output_size():
    model = _tiny_resnet()
    x = torch.randn(2, 3, 64, 64)
    res = compute_cams(model, x, output_size=(40, 50))
    assert res.cams_gt is None and res.raw_gt is None
    assert res.cams_top1.shape == (2, 40, 50)
    same = compute_cams(model, x, res.top1)
    torch.testing.assert_close(same.cams_gt, same.cams_top1)
    # inside a bf16 autocast (as in a validation loop) the forward is bf16, the CAM arithmetic is not
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp = compute_cams(model, x, res.top1)
        feats = model.forward_features(x)
    assert feats.dtype == torch.bfloat16 and amp.raw_gt.dtype == torch.float32
    weight = model.get_classifier().weight.detach()
    manual = (weight[res.top1][:, :, None, None] * feats.float()).mean(1)
    torch.testing.assert_close(amp.raw_gt, manual, rtol=1e-5, atol=1e-6)
    # a (Distributed)DataParallel wrapper is looked through
    wrapped = compute_cams(nn.DataParallel(model), x, output_size=(40, 50))
    torch.testing.assert_close(wrapped.cams_top1, res.cams_top1)


def test_resize_matches_cv2_inter_cubic():
    """Measured: <= 4.1e-7 of each map's range from cv2.resize INTER_CUBIC (cv2 moves by up to 1.2e-6
    with its IPP path on/off); after normalisation <= 6e-7, i.e. ~1e-5 of the 8-bit quantised pixels
    move by one level."""
    rng = np.random.default_rng(0)
    for h, size in [(7, 224), (14, 224), (28, 224), (12, 96), (8, 299), (17, 299), (3, 64), (5, 7)]:
        maps = rng.standard_normal((20, h, h)).astype(np.float32) * rng.uniform(0.01, 100, (20, 1, 1))
        maps = maps.astype(np.float32)
        ref = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_CUBIC) for m in maps])
        ours = resize_cams(torch.from_numpy(maps), (size, size)).numpy()
        span = maps.max((1, 2)) - maps.min((1, 2))
        assert (np.abs(ours - ref).max((1, 2)) / span).max() < 1e-6, (h, size)
        # torch's own bicubic is the same kernel (a = -0.75, half-pixel centres, replicated border)
        torch_bicubic = F.interpolate(torch.from_numpy(maps)[:, None], size=(size, size), mode='bicubic')
        assert (np.abs(ours - torch_bicubic[:, 0].numpy()).max((1, 2)) / span).max() < 5e-6
    # non-square: cv2 takes (W, H)
    m = rng.standard_normal((5, 9)).astype(np.float32)
    ref = cv2.resize(m, (40, 30), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_allclose(resize_cams(torch.from_numpy(m), (30, 40)).numpy(), ref, atol=1e-5)


def test_normalize_edge_cases():
    maps = torch.randn(6, 9, 9, dtype=torch.float64)
    maps[1] = 3.0  # constant
    maps[2, 4, 4] = float('nan')
    maps[3, 0, 0] = float('inf')
    maps[4] = 0.0
    maps[5, 2, 3] = float('-inf')
    out = normalize_cams(maps)
    assert out[0].min() == 0 and out[0].max() == 1
    for i in range(1, 6):
        assert torch.equal(out[i], torch.zeros(9, 9, dtype=torch.float64)), i
    np.testing.assert_array_equal(out[0].numpy(), _reference_normalize(maps[0].numpy()))
    assert not torch.isnan(out).any()
    # the NaN/constant rule is applied per image inside a batch, after the resize, through compute_cams too
    assert normalize_cams(torch.full((2, 3, 4, 5), 7.0)).eq(0).all()


class _Toy(nn.Module):
    """A minimal timm-style classifier: features, GAP, linear."""

    def __init__(self, layers, channels=4, num_classes=3, gate=False):
        super().__init__()
        self.features = nn.Sequential(*layers)
        self.gate = nn.Conv2d(channels, channels, 1) if gate else None
        self.fc = nn.Linear(channels, num_classes)

    def forward_features(self, x):
        x = self.features(x)
        if self.gate is not None:  # squeeze-excitation style global gate
            x = x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))
        return x

    def forward_head(self, x, pre_logits=False):
        return self.fc(x.mean((2, 3)))

    def get_classifier(self):
        return self.fc

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _conv(k, s, p, d=1):
    return nn.Conv2d(4, 4, k, s, p, dilation=d)


def _first(k, s, p):
    return nn.Conv2d(3, 4, k, s, p)


def _centre_line(layers):
    """Receptive-field centre of output cell j as origin + stride * j, by conv arithmetic (independent
    of the measurement): each layer maps j to stride * j - padding + dilation * (kernel - 1) / 2."""
    origin, stride = 0.0, 1.0
    for k, s, p, d in reversed(layers):
        origin, stride = (s * origin - p + d * (k - 1) / 2), s * stride
    return origin, stride


@pytest.mark.parametrize(
    'spec, gate',
    [
        ([(3, 2, 1, 1), (3, 2, 1, 1)], False),  # stride-2 convs with padding: cell i at 4 i
        ([(3, 1, 1, 1), ('pool', 2, 2, 0), ('pool', 2, 2, 0)], False),  # VGG-style 2x2 pools: aligned
        ([(3, 2, 0, 1), (3, 2, 0, 1)], False),  # valid convs (Inception-style)
        ([(5, 2, 2, 1), (3, 1, 2, 2), (3, 2, 1, 1)], True),  # dilation + a global SE-style gate
    ],
)
def test_geometry_matches_conv_arithmetic(spec, gate):
    layers, arith = [], []
    for i, (k, s, p, d) in enumerate(spec):
        if k == 'pool':  # ('pool', kernel, stride, padding)
            layers.append(nn.MaxPool2d(s, p, d))
            arith.append((s, p, d, 1))
        else:
            layers += [_first(k, s, p) if i == 0 else _conv(k, s, p, d), nn.ReLU()]
            if i == 0 and d != 1:
                raise AssertionError
            arith.append((k, s, p, d))
    torch.manual_seed(0)
    model = _Toy(layers, gate=gate).eval()
    geom = cam_geometry(model, (3, 48, 40))
    origin, stride = _centre_line(arith)
    assert geom.stride == (stride, stride)
    assert geom.origin == (origin, origin)
    h, w = model.forward_features(torch.zeros(1, 3, 48, 40)).shape[-2:]
    assert geom.feature_size == (h, w) and geom.input_size == (48, 40)
    # offset = where the reference resize puts the cells minus their true centres
    expect_dy = np.mean((np.arange(h) + 0.5) * 48 / h - 0.5 - (origin + stride * np.arange(h)))
    assert cam_offset(model, (3, 48, 40))[0] == pytest.approx(expect_dy)
    assert 'centred at' in format_cam_geometry(model, (3, 48, 40))


def test_hot_cell_peak_reference_vs_centered(tiny_resnet):
    """One hot feature cell in: the reference resize puts its peak at (i + 0.5) * S - 0.5, half a stride
    down-right of the cell's receptive-field centre (s * i for a ResNet); 'centered' puts it on the centre."""
    model = tiny_resnet
    geom = cam_geometry(model, (3, 128, 128))
    assert geom.feature_size == (4, 4) and geom.stride == (32.0, 32.0) and geom.origin == (0.0, 0.0)
    assert geom.offset == (15.5, 15.5)
    for i, j in [(1, 2), (2, 1)]:
        hot = torch.zeros(1, 4, 4)
        hot[0, i, j] = 1.0
        for align, expect in [
            ('reference', ((i + 0.5) * 32 - 0.5, (j + 0.5) * 32 - 0.5)),
            ('centered', (32 * i, 32 * j)),
        ]:
            up = resize_cams(hot, (128, 128), align=align, geometry=geom)[0].numpy()
            ys, xs = np.nonzero(up >= up.max() - 1e-12)
            assert (ys.mean(), xs.mean()) == expect, align
        # the measured offset is the distance between the two peaks
        assert (i + 0.5) * 32 - 0.5 - 32 * i == geom.offset[0]


def test_compute_cams_centered_end_to_end(tiny_resnet):
    model = tiny_resnet
    x = torch.randn(2, 3, 128, 128)
    ref = compute_cams(model, x, torch.tensor([1, 2]))
    cen = compute_cams(model, x, torch.tensor([1, 2]), align='centered')
    torch.testing.assert_close(ref.raw_gt, cen.raw_gt)
    geom = cam_geometry(model, (3, 128, 128))
    expect = normalize_cams(resize_cams(ref.raw_gt, (128, 128), align='centered', geometry=geom)).float()
    torch.testing.assert_close(cen.cams_gt, expect)
    assert not torch.allclose(cen.cams_gt, ref.cams_gt)
    # a geometry measured at another input size is refused
    other = CamGeometry((96, 96), (4, 4), (32.0, 32.0), (0.0, 0.0), 'support', (96, 96))
    with pytest.raises(ValueError, match='input size'):
        compute_cams(model, x, align='centered', geometry=other)


def test_geometry_gradient_method_and_mode_restored():
    """'gradient' is the centroid of the effective receptive field: with uniform kernels it is symmetric
    about the structural centre, so it must agree with the conv arithmetic (cell i at 4 i here)."""
    model = _Toy([_first(3, 2, 1), _conv(3, 2, 1)])
    with torch.no_grad():
        for m in model.features:
            m.weight.fill_(1.0)
            m.bias.zero_()
    model.train()
    model.features[0].eval()
    geom = cam_geometry(model, (3, 64, 64), method='gradient')
    assert model.training and not model.features[0].training and model.features[1].training
    assert geom.method == 'gradient'
    np.testing.assert_allclose(geom.stride, (4.0, 4.0), atol=1e-6)
    np.testing.assert_allclose(geom.origin, (0.0, 0.0), atol=1e-6)
    np.testing.assert_allclose(geom.offset, (1.5, 1.5), atol=1e-6)
    with pytest.raises(ValueError, match="did you mean 'support'"):
        cam_geometry(model, (3, 64, 64), method='suport')


def test_errors_name_the_problem():
    x = torch.randn(2, 3, 64, 64)
    maxpool = _tiny_resnet(global_pool='max')
    with pytest.raises(ValueError, match=r"global-average-pool \+ linear.*'resnet10t'.*pool_type='max'"):
        compute_cams(maxpool, x)
    headless = _tiny_resnet(num_classes=0)
    with pytest.raises(ValueError, match='Identity'):
        compute_cams(headless, x)
    with pytest.raises(ValueError, match='forward_features'):
        compute_cams(nn.Conv2d(3, 3, 1), x)
    model = _tiny_resnet()
    with pytest.raises(ValueError, match='out of range'):
        compute_cams(model, x, torch.tensor([0, 5]))
    with pytest.raises(ValueError, match='shape'):
        compute_cams(model, x, torch.tensor([0]))
    with pytest.raises(ValueError, match="did you mean 'centered'"):
        compute_cams(model, x, align='centred')
    with pytest.raises(ValueError, match='integer'):
        compute_cams(model, x, torch.tensor([0.0, 1.0]))


@pytest.mark.slow
@pytest.mark.parametrize(
    'name, offset',
    [
        ('vgg16_gap', 0.0),  # 2x2 pools centre cells where the resize does
        ('resnet50_se', 7.5),  # stride-2 convs with padding: half a stride (16 px) down-right
        ('mobilenetv1_wsol', 7.5),
    ],
)
def test_registered_backbone_offsets(name, offset):
    """Hot cell through the reference resize vs the measured receptive-field centre, per paper backbone.

    The ADL twins have the same geometry (ADL is identity at eval and keeps shapes). inception_v3_wsol
    (-6.5 px: its unpadded convs centre the cells right/down of the resize's places) needs a 736 px
    probe, too slow for the suite on CPU: ``timm_adl.cam.format_cam_geometry`` prints it.
    """
    model = timm.create_model(name, num_classes=4).eval()
    geom = cam_geometry(model, (3, 224, 224))
    assert geom.feature_size == (14, 14) and geom.stride == (16.0, 16.0)
    assert geom.offset == (offset, offset) and geom.max_abs_offset == (abs(offset), abs(offset))
    i = 6
    hot = torch.zeros(1, 14, 14)
    hot[0, i, i] = 1
    up = resize_cams(hot, (224, 224))[0].numpy()
    ys, _ = np.nonzero(up >= up.max() - 1e-12)
    assert math.isclose(ys.mean() - geom.centres(0)[i], offset)


def test_box_metrics_identical_to_the_opencv_pipeline():
    """On CAM-like maps (a blob plus noise, 14 -> 224) our resize + normalisation and the reference's
    cv2 INTER_CUBIC + normalize_scoremap give the same BoxAcc at every threshold (measured on 2000 maps
    too: identical curves, 5e-6 of the 8-bit pixels differ)."""
    from timm_adl.metrics import BoxEvaluator

    rng = np.random.default_rng(1)
    n = 100
    yy, xx = np.mgrid[0:14, 0:14]
    low = rng.standard_normal((n, 14, 14)) * 0.3
    for i in range(n):
        (cy, cx), s = rng.uniform(2, 12, 2), rng.uniform(1.5, 4)
        low[i] += 3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    low = low.astype(np.float32)
    ref = np.stack(
        [_reference_normalize(cv2.resize(m, (224, 224), interpolation=cv2.INTER_CUBIC)) for m in low]
    )
    ours = normalize_cams(resize_cams(torch.from_numpy(low), (224, 224)).float()).numpy()
    xs, ys = np.sort(rng.integers(0, 224, (n, 2)), 1), np.sort(rng.integers(0, 224, (n, 2)), 1)
    gt = [np.array([[x[0], y[0], x[1], y[1]]]) for x, y in zip(xs, ys, strict=True)]
    for multi in (False, True):
        a, b = BoxEvaluator(multi_contour=multi), BoxEvaluator(multi_contour=multi)
        a.update(ref, gt)
        b.update(ours, gt)
        ra, rb = a.compute(), b.compute()
        for d in (30, 50, 70):
            np.testing.assert_array_equal(ra['curves'][d], rb['curves'][d])


def test_centered_on_a_fresh_model_measures_its_geometry():
    """No cached geometry: compute_cams must probe the model itself, despite its own no_grad forward."""
    model = timm.create_model('resnet10t', num_classes=3, channels=(8, 16, 32, 64), stem_width=8).eval()
    res = compute_cams(model, torch.randn(1, 3, 64, 64), torch.tensor([0]), align='centered')
    assert res.cams_gt.shape == (1, 64, 64)
    assert float(res.cams_gt.max()) == pytest.approx(1.0)
