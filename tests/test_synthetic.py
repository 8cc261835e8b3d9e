"""The synthetic WSOL generator: determinism, the on-disk format, the geometry of its ground truth."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

from timm_adl.data import create_wsol_dataset
from timm_adl.data.synthetic import (
    SPLITS,
    SYNTHETIC_VARIANTS,
    SyntheticConfig,
    make_synthetic_wsol,
    render_synthetic,
    synthetic_variant,
)

SMALL = {'train': 20, 'train-fullsup': 6, 'val': 8, 'test': 10}


def _tree_digest(root) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp('synth') / 'set'
    cfg = SyntheticConfig(sizes=SMALL)
    make_synthetic_wsol(root, seed=3, config=cfg)
    return root, cfg


def test_same_seed_same_bytes(small_set, tmp_path):
    root, cfg = small_set
    again = make_synthetic_wsol(tmp_path / 'again', seed=3, config=cfg)
    first, second = _tree_digest(root), _tree_digest(again)
    # an image and a mask per item, four metadata files per split for boxes and for masks, the stamp
    assert len(first) == 2 * sum(SMALL.values()) + 2 * 4 * len(SPLITS) + 1
    assert first == second


def test_other_seed_other_images():
    cfg = SyntheticConfig(sizes=SMALL)
    a = render_synthetic(cfg, 'test', seed=0)
    b = render_synthetic(cfg, 'test', seed=1)
    assert not np.array_equal(a['images'], b['images'])
    # the chunked renderer gives the same images whatever the split size (prefix property)
    c = render_synthetic(cfg, 'test', n=300, seed=0)
    np.testing.assert_array_equal(c['images'][: SMALL['test']], a['images'])


def test_loader_reads_metadata(small_set):
    root, cfg = small_set
    truth = render_synthetic(cfg, 'test', seed=3)
    ds = create_wsol_dataset(
        'wsol-metadata',
        root,
        'test',
        img_size=cfg.img_size,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        metadata_root=root / 'metadata',
    )
    assert len(ds) == SMALL['test']
    for i in range(len(ds)):
        image, label, boxes = ds[i][:3]
        assert label == int(truth['labels'][i])
        torch.testing.assert_close(boxes, torch.tensor(truth['boxes'][i : i + 1], dtype=torch.float32))
        # PNG is lossless: the loaded pixels are the rendered ones
        expected = torch.from_numpy(truth['images'][i]).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(image, expected, atol=1e-6, rtol=0)
    for split in SPLITS:  # every split, including the paper's train-fullsup, is readable
        assert (
            len(create_wsol_dataset('wsol-metadata', root, split, metadata_root=root / 'metadata'))
            == SMALL[split]
        )


def test_loader_reads_masks(small_set):
    root, cfg = small_set
    truth = render_synthetic(cfg, 'val', seed=3)
    ds = create_wsol_dataset(
        'wsol-metadata', root, 'val', img_size=cfg.img_size, metadata_root=root / 'metadata-masks'
    )
    item = ds[0]
    assert len(item) == 5  # image, label, boxes, mask, ignore
    np.testing.assert_array_equal(item[3].numpy(), truth['masks'][0])


def test_boxes_are_tight_around_the_object():
    cfg = SyntheticConfig()
    d = render_synthetic(cfg, 'val', n=64, seed=5)
    for box, mask, head in zip(d['boxes'], d['masks'], d['head_boxes'], strict=True):
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == tuple(box)
        assert 0 <= box[0] < box[2] < cfg.img_size and 0 <= box[1] < box[3] < cfg.img_size
        # the head (the most discriminative part) lies inside the whole-object box and is much smaller
        assert (
            box[0] - 1 <= head[0]
            and head[2] <= box[2] + 1
            and box[1] - 1 <= head[1]
            and head[3] <= box[3] + 1
        )
        assert (head[2] - head[0]) * (head[3] - head[1]) < 0.5 * (box[2] - box[0]) * (box[3] - box[1])


def test_head_erased_changes_only_head_pixels():
    cfg = SyntheticConfig()
    full = render_synthetic(cfg, 'val', n=16, seed=2)
    erased = render_synthetic(cfg, 'val', n=16, seed=2, draw_head=False)
    changed = (full['images'] != erased['images']).any(-1)
    yy, xx = np.mgrid[: cfg.img_size, : cfg.img_size]
    for i in range(16):
        x0, y0, x1, y1 = full['head_boxes'][i]
        inside = (xx >= x0 - 1) & (xx <= x1 + 1) & (yy >= y0 - 1) & (yy <= y1 + 1)
        assert changed[i].any() and not (changed[i] & ~inside).any()
    np.testing.assert_array_equal(full['boxes'], erased['boxes'])


def test_splits_are_disjoint(small_set):
    root, _ = small_set
    ids, hashes = {}, {}
    for split in SPLITS:
        with open(root / 'metadata' / split / 'image_ids.txt') as f:
            ids[split] = set(f.read().split())
        hashes[split] = {hashlib.sha256((root / i).read_bytes()).hexdigest() for i in ids[split]}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not ids[a] & ids[b], (a, b)
            assert not hashes[a] & hashes[b], (a, b)


def test_cache_is_reused_and_invalidated(small_set, tmp_path):
    root = tmp_path / 'cache'
    cfg = SyntheticConfig(sizes={'train': 4, 'train-fullsup': 2, 'val': 2, 'test': 2})
    make_synthetic_wsol(root, seed=0, config=cfg)
    stamp = root / 'synthetic.json'
    mtime = stamp.stat().st_mtime_ns
    make_synthetic_wsol(root, seed=0, config=cfg)
    assert stamp.stat().st_mtime_ns == mtime  # reused, not rewritten
    make_synthetic_wsol(root, seed=1, config=cfg)
    assert stamp.stat().st_mtime_ns != mtime  # another seed: regenerated in place
    assert '"seed": 1' in stamp.read_text()


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'notes.txt').write_text('keep me')
    with pytest.raises(FileExistsError, match='not a synthetic WSOL set'):
        make_synthetic_wsol(tmp_path / 'mine', config=SyntheticConfig(sizes={'test': 2}))
    assert (tmp_path / 'mine' / 'notes.txt').read_text() == 'keep me'


@pytest.mark.parametrize(
    'kwargs, match',
    [
        ({'img_size': 16}, 'img_size'),
        ({'num_classes': 1}, 'num_classes'),
        ({'head_radius': (5.0, 2.0)}, 'head_radius'),
        ({'sizes': {'tets': 3}}, "unknown split 'tets'"),
        ({'img_size': 64, 'body_a': (30.0, 40.0)}, 'do not fit'),
    ],
)
def test_bad_config_is_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)


# sha256 of images + masks + labels + boxes of the first 8 images, rendered by the version-1 renderer (main
# before the named variants, commit 07da2dd) with its default settings: 'head-only' must keep them exactly
HEAD_ONLY_SHA256 = {
    'train': '26b491fb48fc234bbcdf9412848ac2a07c4029f23cd9b991812cde2ad4f5912c',
    'val': '6c5dce6448301222719028df9ef59146b902e3a133114e8b9e12214848b49c8c',
}
HEAD_ONLY_NO_HEAD_SHA256 = '885b3659cf52ee4734b27415530972e11c2a24fe3d0f97e7655cf3004185ac4e'


def _digest(d: dict) -> str:
    parts = (d['images'], d['masks'], d['labels'], d['boxes'])
    return hashlib.sha256(b''.join(p.tobytes() for p in parts)).hexdigest()


def test_named_variants_exist():
    assert set(SYNTHETIC_VARIANTS) == {'default', 'head-only', 'pretrain'}
    assert synthetic_variant('default') == SyntheticConfig()  # the demo's SyntheticConfig() is the default
    for name, cfg in SYNTHETIC_VARIANTS.items():
        assert synthetic_variant(name) is cfg


def test_head_only_is_pixel_identical_to_version_1():
    cfg = synthetic_variant('head-only')
    for split, expected in HEAD_ONLY_SHA256.items():
        assert _digest(render_synthetic(cfg, split, n=8, seed=0)) == expected, split
    erased = render_synthetic(cfg, 'test', n=4, seed=3, draw_head=False)
    assert hashlib.sha256(erased['images'].tobytes()).hexdigest() == HEAD_ONLY_NO_HEAD_SHA256


def test_unknown_variant_lists_the_closest():
    with pytest.raises(ValueError, match=r"unknown synthetic variant 'head_only'; closest valid: head-only"):
        synthetic_variant('head_only')


def test_default_head_is_an_imperfect_cue():
    cfg = synthetic_variant('default')
    assert cfg.has_head and 0 < cfg.p_head_noise < 1 and cfg.p_body_noise < 0.5
    d = render_synthetic(cfg, 'val', n=512, seed=0)
    # the head's hue names the class except on about p_head_noise * 5/6 of the images (a random class)
    hx = ((d['head_boxes'][:, 0] + d['head_boxes'][:, 2]) / 2).round().astype(int)
    hy = ((d['head_boxes'][:, 1] + d['head_boxes'][:, 3]) / 2).round().astype(int)
    centre = d['images'][np.arange(len(hx)), hy, hx].astype(float) / 255
    mx, mn = centre.max(1), centre.min(1)
    hue = np.zeros(len(hx))
    for c, off in ((0, 0.0), (1, 1 / 3), (2, 2 / 3)):  # coarse hue of saturated pixels
        sel = centre.argmax(1) == c
        nxt, prv = centre[sel, (c + 1) % 3], centre[sel, (c + 2) % 3]
        hue[sel] = (off + (nxt - prv) / (6 * np.maximum(mx[sel] - mn[sel], 1e-6))) % 1
    named = np.rint(hue * cfg.num_classes).astype(int) % cfg.num_classes
    agree = (named == d['labels']).mean()
    expected = 1 - cfg.p_head_noise * (cfg.num_classes - 1) / cfg.num_classes
    assert abs(agree - expected) < 0.08, (agree, expected)


def test_pretrain_is_head_less_with_cues_over_the_body():
    cfg = synthetic_variant('pretrain')
    assert not cfg.has_head and cfg.num_classes >= 12 and cfg.body_families > 1
    d = render_synthetic(cfg, 'train', n=64, seed=0)
    erased = render_synthetic(cfg, 'train', n=64, seed=0, draw_head=False)
    np.testing.assert_array_equal(d['images'], erased['images'])  # there is no head to erase
    assert set(np.unique(d['labels'])) == set(range(cfg.num_classes))
    for box, mask in zip(d['boxes'], d['masks'], strict=True):
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == tuple(box)


def test_pretrain_body_colour_family_is_the_class():
    cfg = synthetic_variant('pretrain')
    d = render_synthetic(cfg.replace(stripe_contrast=(0.0, 0.0), pixel_noise=0.0), 'val', n=256, seed=1)
    body = np.stack([img[m].mean(0) for img, m in zip(d['images'], d['masks'], strict=True)])
    family = d['labels'] % cfg.body_families
    centres = np.stack([body[family == f].mean(0) for f in range(cfg.body_families)])
    nearest = np.linalg.norm(body[:, None] - centres[None], axis=-1).argmin(1)
    assert (nearest == family).mean() > 0.95


def test_bad_variant_fields_are_named():
    with pytest.raises(ValueError, match='body_families'):
        SyntheticConfig(num_classes=6, body_families=4)
    with pytest.raises(ValueError, match='p_head_noise'):
        SyntheticConfig(p_head_noise=1.5)


def test_pretrain_and_finetune_recipes_match_the_demo_recipes():
    import dataclasses

    from timm_adl.commands.demo import recipe_dir
    from timm_adl.train import load_config

    pre = load_config(recipe_dir() / 'pretrain.yaml')
    assert pre.adl is None and pre.initial_checkpoint is None
    for arm in ('cam', 'adl'):
        base = load_config(recipe_dir() / f'{arm}.yaml')
        ft = load_config(recipe_dir() / f'{arm}_ft.yaml')
        assert ft.initial_checkpoint is None  # the study fills it with the pretrain run's weights
        assert (ft.optim.lr_backbone_mult, ft.optim.lr_head_mult) == (0.1, 1.0)
        assert dataclasses.replace(ft.optim, lr_backbone_mult=1.0) == base.optim
        for key in (
            'model',
            'model_kwargs',
            'img_size',
            'epochs',
            'batch_size',
            'sched',
            'aug',
            'data',
            'adl',
        ):
            assert getattr(ft, key) == getattr(base, key), (arm, key)
        assert (pre.model, pre.model_kwargs) == (base.model, base.model_kwargs)
