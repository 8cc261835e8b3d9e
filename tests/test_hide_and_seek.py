"""Hide-and-Seek (Singh & Lee 2017): hand-computed masks, partial edge cells, the extremes, the patch scaling,
the config keys, per-sample seeding through the trainer's SeededDataset, and a tiny training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fakes import make_fake_wsol_metadata, tiny_recipe
from safetensors.torch import load_file

from timm_adl.data.hide_and_seek import HideAndSeek, scaled_patch_size
from timm_adl.train import load_config, run_training
from timm_adl.train.config import ConfigError
from timm_adl.train.distributed import SeededDataset
from timm_adl.train.engine import build_datasets

# torch.rand(6, generator=torch.Generator().manual_seed(0)): 0.4963 0.7682 0.0885 0.1320 0.3074 0.6341,
# so at hide_prob 0.5 the cells, row-major, are hidden, shown, hidden, hidden, hidden, shown.


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _img(c: int, h: int, w: int) -> torch.Tensor:
    return torch.arange(1, c * h * w + 1, dtype=torch.float32).reshape(c, h, w)


def test_hand_computed_4px_cells_on_an_8px_image() -> None:
    img = _img(3, 8, 8)
    out = HideAndSeek(4, 0.5, generator=_gen())(img)
    expected = img.clone()
    expected[:, 0:4, 0:4] = 0.0  # cell (0, 0): 0.4963 < 0.5
    # cell (0, 1): 0.7682 stays
    expected[:, 4:8, 0:4] = 0.0  # cell (1, 0): 0.0885
    expected[:, 4:8, 4:8] = 0.0  # cell (1, 1): 0.1320
    assert torch.equal(out, expected)
    assert torch.equal(img, _img(3, 8, 8))  # the input is left as it is


def test_partial_cells_at_the_bottom_and_right_edges() -> None:
    img = _img(2, 10, 7)  # 4 px cells: rows 0-3, 4-7, 8-9; columns 0-3, 4-6 -> a 3 x 2 grid
    out = HideAndSeek(4, 0.5, fill=-1.5, generator=_gen())(img)
    expected = img.clone()
    expected[:, 0:4, 0:4] = -1.5
    expected[:, 4:8, 0:4] = -1.5
    expected[:, 4:8, 4:7] = -1.5  # partial column
    expected[:, 8:10, 0:4] = -1.5  # partial row; cell (2, 1) (0.6341) stays
    assert torch.equal(out, expected)


def test_one_draw_per_cell_row_major() -> None:
    gen = _gen()
    HideAndSeek(4, 0.5, generator=gen)(_img(1, 10, 7))
    assert torch.equal(torch.rand(1, generator=gen), torch.rand(7, generator=_gen())[6:])


@pytest.mark.parametrize('size', [(5, 5), (8, 8), (9, 13)])
def test_prob_zero_hides_nothing_and_one_hides_everything(size: tuple[int, int]) -> None:
    img = torch.randn(3, *size)
    assert torch.equal(HideAndSeek(2, 0.0)(img), img)
    assert torch.equal(HideAndSeek(2, 1.0, fill=0.25)(img), torch.full_like(img, 0.25))


def test_global_generator_reproducible_with_manual_seed() -> None:
    img = torch.randn(3, 32, 32)
    has = HideAndSeek(5, 0.5)
    torch.manual_seed(11)
    a = has(img)
    torch.manual_seed(11)
    b = has(img)
    c = has(img)
    assert torch.equal(a, b) and not torch.equal(b, c)


@pytest.mark.parametrize(
    ('patch', 'img_size', 'expected'), [(32, 224, 32), (32, 448, 64), (32, 32, 5), (32, 96, 14), (1, 8, 1)]
)
def test_patch_scales_with_img_size(patch: int, img_size: int, expected: int) -> None:
    assert scaled_patch_size(patch, img_size) == expected  # round(patch * img_size / 224), at least 1 px


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'patch_size': 0}, 'patch_size must be an int >= 1, got 0'),
        ({'patch_size': 2.5}, 'patch_size must be an int >= 1, got 2.5'),
        ({'patch_size': 4, 'hide_prob': 1.5}, r'hide_prob must be in \[0, 1\], got 1.5'),
        ({'patch_size': 4, 'fill': float('nan')}, 'fill must be a finite number, got nan'),
    ],
)
def test_bad_arguments_are_one_clear_line(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HideAndSeek(**kwargs)


def test_refuses_a_pil_image_or_a_batch() -> None:
    with pytest.raises(ValueError, match=r'expects a \(C, H, W\) tensor .*got \(2, 3, 4, 4\)'):
        HideAndSeek(2)(torch.zeros(2, 3, 4, 4))


# -- config and trainer -------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=4)
    return root


@pytest.mark.parametrize(
    ('override', 'match'),
    [
        ('aug.hide_patch=-1', r"^config key 'aug.hide_patch' must be >= 0 \(0 = off\), got -1$"),
        ('aug.hide_prob=1.5', r"^config key 'aug.hide_prob' must be in \[0, 1\], got 1.5$"),
        ('aug.hide_prob=-0.1', r"^config key 'aug.hide_prob' must be in \[0, 1\], got -0.1$"),
    ],
)
def test_config_validation(data_root: Path, tmp_path: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(tiny_recipe(data_root, tmp_path), [override])


def test_adl_config_with_both_components_off_is_refused(data_root: Path, tmp_path: Path) -> None:
    recipe = tiny_recipe(
        data_root, tmp_path, adl=dict(after=['layer4'], use_drop=False, use_importance=False)
    )
    with pytest.raises(
        ConfigError, match=r"^config keys 'adl.use_drop' and 'adl.use_importance' are both false"
    ):
        load_config(recipe)


def _train_items(data_root: Path, tmp_path: Path, hide_patch: int, seed: int = 0) -> tuple[list, object]:
    cfg = load_config(tiny_recipe(data_root, tmp_path, seed=seed, aug=dict(hide_patch=hide_patch)))
    train, val = build_datasets(cfg, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    seeded = SeededDataset(train, cfg.seed)
    return [seeded[(epoch, i)][0] for epoch in (0, 1) for i in range(len(train))], val


def test_train_items_hide_whole_seeded_cells_and_eval_never(data_root: Path, tmp_path: Path) -> None:
    """hide_patch 32 at img_size 32 is a 5 px cell: the items differ from HaS-off exactly on whole cells, at 0,
    identically in a second pass (resume and num_workers see the same masks), differently per item."""
    plain, _ = _train_items(data_root, tmp_path, 0)
    hidden, val = _train_items(data_root, tmp_path, 32)
    again, _ = _train_items(data_root, tmp_path, 32)
    assert all(torch.equal(a, b) for a, b in zip(hidden, again, strict=True))
    masks = []
    for p, h in zip(plain, hidden, strict=True):
        changed = (p != h).any(dim=0)
        assert torch.all(h[:, changed] == 0.0)
        cells = torch.nn.functional.pad(changed, (0, 3, 0, 3)).reshape(7, 5, 7, 5)  # 32 px -> 7 cells of 5
        per_cell = cells.float().mean(dim=(1, 3))
        # a hidden cell: every pixel of it set to 0 (a pixel already 0 is "unchanged"; none here)
        full = per_cell[:6, :6]
        assert torch.all((full == 0) | (full == 1)), 'a 5 px cell half hidden'
        masks.append(per_cell > 0)
    assert 0 < torch.stack(masks).float().mean() < 1
    assert len({tuple(m.flatten().tolist()) for m in masks}) == len(masks)  # each item its own mask
    assert not any(type(t).__name__ == 'HideAndSeek' for t in getattr(val.transform, 'transforms', []))


def test_one_step_training_run_with_has(data_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = dict(name='wsol-metadata', root=str(data_root), val_split=None)  # the step only, no validation
    over = dict(epochs=1, batch_size=8, data=data, aug=dict(hide_patch=32))
    result = run_training(load_config(tiny_recipe(data_root, tmp_path / 'has', **over)), progress=False)
    assert result['steps'] == 1
    saved = load_config(tmp_path / 'has' / 'config.yaml')
    assert saved.aug.hide_patch == 32 and saved.aug.hide_prob == 0.5
    weights = load_file(str(tmp_path / 'has' / 'last.safetensors'))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


@pytest.mark.slow  # two spawned training processes
def test_kill_and_resume_with_has_is_bit_exact(data_root: Path, tmp_path: Path) -> None:
    """The hidden patches come from the per-sample seeded generator: a run killed after step 3 and resumed
    ends with the weights of an uninterrupted one."""
    from test_train import _assert_same_weights, _join, _start

    common = dict(
        epochs=2, batch_size=4, ckpt_every_steps=1, select_metric='top1_clas', aug=dict(hide_patch=32)
    )
    common['data'] = dict(name='wsol-metadata', root=str(data_root), val_split=None)
    plain = tiny_recipe(data_root, tmp_path / 'plain', **common)
    killed = tiny_recipe(data_root, tmp_path / 'killed', **common)
    procs = [_start(plain, 'plain'), _start(killed, 'kill-after:3')]
    _join(procs[0])
    _join(procs[1], expect_rc=-9)
    _join(_start(killed, 'resume'))
    _assert_same_weights(tmp_path / 'plain' / 'last.safetensors', tmp_path / 'killed' / 'last.safetensors')
