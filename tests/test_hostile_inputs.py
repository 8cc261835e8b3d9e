"""Hostile inputs outside the trainer (issue 12): damaged --checkpoint files, metadata encodings, image ids
that leave the data root, bad local folders for timm_adl.load, label names of the wrong length, and ADL on
an all-negative attention map."""

from __future__ import annotations

import codecs
import json
import pickle
import re
from pathlib import Path

import pytest
import timm
import torch
from fakes import make_fake_cub, make_fake_wsol_metadata, write_image
from safetensors.torch import save_file

import timm_adl
from timm_adl import hub
from timm_adl.adl import ADL, adl_maps
from timm_adl.cli import main
from timm_adl.data.cub import load_cub_records
from timm_adl.data.records import WSOLDataError
from timm_adl.data.wsol_metadata import load_wsol_metadata_records

# ---------------------------------------------------------------------------------------------------------
# damaged --checkpoint files: one line naming the file, exit 2


@pytest.fixture(scope='module')
def damaged(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp('ckpt')
    good = root / 'good.safetensors'
    save_file(timm.create_model('test_resnet', num_classes=2).state_dict(), str(good))
    data = good.read_bytes()
    truncated, renamed = root / 'truncated.safetensors', root / 'pickle.safetensors'
    truncated.write_bytes(data[: len(data) // 2])
    renamed.write_bytes(pickle.dumps({'fc.weight': torch.zeros(2, 2)}))
    return {'truncated': truncated, 'pickle': renamed}


@pytest.fixture(scope='module')
def wsol_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, splits=('test',), n_classes=2, per_class=1)
    return root


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f'timm-adl {command}: error: ') and err.count('\n') == 1, err
    return err


@pytest.mark.parametrize('kind', ['truncated', 'pickle'])
@pytest.mark.parametrize('num_classes', [[], ['--num-classes', '2']])  # with it, no header is read first
def test_cam_with_a_damaged_checkpoint_is_one_line(damaged, tmp_path, capsys, kind, num_classes):
    photo = tmp_path / 'photo.png'
    write_image(photo, (40, 30))
    argv = ['cam', '--image', photo, '--model', 'test_resnet', '--checkpoint', damaged[kind], *num_classes]
    assert main([str(a) for a in argv]) == 2
    assert f'{damaged[kind]} is corrupted or truncated' in _one_line(capsys, 'cam')


@pytest.mark.parametrize('kind', ['truncated', 'pickle'])
def test_eval_with_a_damaged_checkpoint_is_one_line(damaged, wsol_root, capsys, kind):
    argv = ['eval', '--model', 'test_resnet', '--num-classes', '2', '--checkpoint', damaged[kind]]
    argv += ['--data-dir', wsol_root, '--dataset', 'wsol-metadata', '--split', 'test', '--img-size', '32']
    assert main([str(a) for a in argv]) == 2
    assert f'{damaged[kind]} is corrupted or truncated' in _one_line(capsys, 'eval')


def test_read_weights_raises_corrupt_checkpoint_error(damaged):
    from timm_adl.hub.weights import read_weights

    for path in damaged.values():
        with pytest.raises(hub.CorruptCheckpointError, match=re.escape(str(path))):
            read_weights(path)


# ---------------------------------------------------------------------------------------------------------
# metadata text files: encodings and paths


@pytest.fixture
def meta_root(tmp_path) -> Path:
    make_fake_wsol_metadata(tmp_path, splits=('val',), n_classes=2, per_class=1)
    return tmp_path


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def test_utf8_bom_is_accepted(meta_root):
    want = load_wsol_metadata_records(meta_root, 'val')
    for name in ('image_ids.txt', 'class_labels.txt', 'image_sizes.txt', 'localization.txt'):
        path = meta_root / 'metadata' / 'val' / name
        _rewrite(path, codecs.BOM_UTF8 + path.read_bytes())
    assert load_wsol_metadata_records(meta_root, 'val') == want


def test_utf16_file_names_file_and_line(meta_root):
    path = meta_root / 'metadata' / 'val' / 'image_ids.txt'
    _rewrite(path, path.read_text().encode('utf-16'))
    with pytest.raises(
        WSOLDataError, match=re.escape(f'{path}:1: the file is UTF-16 text; save it as UTF-8')
    ):
        load_wsol_metadata_records(meta_root, 'val')


def test_non_utf8_byte_names_file_and_line(meta_root):
    path = meta_root / 'metadata' / 'val' / 'class_labels.txt'
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b',', b'\xe9,', 1)  # Latin-1 'é' on line 2
    _rewrite(path, b''.join(lines))
    with pytest.raises(WSOLDataError, match=re.escape(f'{path}:2: not UTF-8 text')):
        load_wsol_metadata_records(meta_root, 'val')


@pytest.mark.parametrize('image_id', ['../outside.jpg', 'val/../../outside.jpg', '/etc/hostname'])
def test_image_id_outside_the_root_is_refused(meta_root, image_id):
    outside = meta_root.parent / 'outside.jpg'
    write_image(outside, (20, 20))  # exists: the id must be refused, not merely "not found"
    meta = meta_root / 'metadata' / 'val'
    first = (meta / 'image_ids.txt').read_text().splitlines()[0]
    for name in ('image_ids.txt', 'class_labels.txt', 'image_sizes.txt', 'localization.txt'):
        path = meta / name
        path.write_text(path.read_text().replace(first, image_id))
    with pytest.raises(WSOLDataError, match='points outside the data root'):
        load_wsol_metadata_records(meta_root, 'val')


def test_mask_path_outside_the_mask_root_is_refused(tmp_path):
    make_fake_wsol_metadata(tmp_path, kind='masks', splits=('val',), n_classes=1, per_class=1)
    loc = tmp_path / 'metadata' / 'val' / 'localization.txt'
    lines = loc.read_text().splitlines()
    image_id, _, ignore = lines[0].split(',')
    lines[0] = f'{image_id},../../etc/hostname,{ignore}'
    loc.write_text('\n'.join(lines) + '\n')
    with pytest.raises(WSOLDataError, match=re.escape("mask path '../../etc/hostname' points outside")):
        load_wsol_metadata_records(tmp_path, 'val', mask_root=tmp_path / 'masks')


def test_cub_image_path_outside_the_root_is_refused(tmp_path):
    info = make_fake_cub(tmp_path, n_classes=1, per_class=2)
    images = info['base'] / 'images.txt'
    lines = images.read_text().splitlines()
    lines[0] = lines[0].split()[0] + ' ../../../outside.jpg'
    images.write_text('\n'.join(lines) + '\n')
    with pytest.raises(WSOLDataError, match=r'images\.txt:1: image path .* points outside the data root'):
        for split in ('train', 'test'):
            load_cub_records(tmp_path, split)


# ---------------------------------------------------------------------------------------------------------
# timm_adl.load: what was looked for, which file is bad, label names that do not fit


@pytest.fixture(scope='module')
def saved_folder(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model('resnet10t', num_classes=3, channels=[8, 16, 32, 64], stem_width=8)
    return hub.save_pretrained(model, tmp_path_factory.mktemp('saved') / 'r10', label_names=['a', 'b', 'c'])


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / folder.name))


def test_load_missing_local_folder_says_what_was_looked_for(tmp_path):
    missing = tmp_path / 'no' / 'such' / 'dir'
    with pytest.raises(FileNotFoundError, match=re.escape(f"no local folder '{missing}' (with config.json")):
        timm_adl.load(missing)
    with pytest.raises(FileNotFoundError, match='not a Hub repo id'):
        timm_adl.load('/nonexistent/dir')


def test_load_truncated_config_json_names_the_file(saved_folder, tmp_path):
    folder = _copy(saved_folder, tmp_path)
    config = folder / 'config.json'
    config.write_bytes(config.read_bytes()[:40])
    with pytest.raises(hub.CorruptCheckpointError, match=re.escape(f'{config} is not valid JSON')):
        timm_adl.load(folder)


def test_load_label_names_of_the_wrong_length(saved_folder, tmp_path):
    assert timm_adl.load(saved_folder).label_names == ['a', 'b', 'c']
    folder = _copy(saved_folder, tmp_path)
    config = json.loads((folder / 'config.json').read_text())
    config['label_names'] = ['a', 'b']
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=re.escape('config.json has 2 label_names but the model has 3 classes')
    ):
        timm_adl.load(folder)


# ---------------------------------------------------------------------------------------------------------
# ADL on an all-negative attention map (documented in the README: the peak is not dropped there)


def test_all_negative_attention_drops_nothing_as_the_reference_formula():
    """Both references: ``drop_mask = attention < gamma * max(attention)``. With every attention value
    negative, ``gamma * max`` lies above the max, so every cell is kept: the peak is dropped only when the
    map's peak is positive."""
    torch.manual_seed(0)
    x = -torch.rand(2, 4, 5, 5) - 0.1  # every channel mean < 0
    gamma = 0.9
    attention = x.mean(dim=1, keepdim=True)
    peak = attention.view(2, -1).max(dim=1).values.view(2, 1, 1, 1)
    reference = (attention < peak * gamma).float()
    drop_mask, _ = adl_maps(x, gamma)
    assert torch.equal(drop_mask, reference)
    assert torch.equal(drop_mask, torch.ones_like(drop_mask))  # nothing dropped, the peak included
    layer = ADL(drop_rate=1.0, gamma=gamma).train()  # always the drop mask
    assert torch.equal(layer(x), x)
    positive, _ = adl_maps(-x, gamma)
    assert positive.amin() == 0  # a positive map: its peak is dropped
