"""`timm-adl cam` and `timm-adl eval` end to end on a tiny timm model and fake data trees."""

import json
import re

import numpy as np
import pytest
import timm
import torch
from fakes import box_outline, has_swatch, make_fake_wsol_metadata, write_image
from PIL import Image
from safetensors.torch import save_file

from timm_adl.cli import main
from timm_adl.commands.eval import paper_box
from timm_adl.data import create_wsol_dataset
from timm_adl.viz import GT_COLOR, PRED_COLOR

PAD = 4
IMG = 64  # evaluation resolution of the tests


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=2)
    path = tmp_path_factory.mktemp('ckpt') / 'w.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cam_command_writes_overlay_with_box(tmp_path, ckpt, capsys):
    photo = tmp_path / 'photo.jpg'
    write_image(photo, (90, 70), seed=3)
    out = tmp_path / 'o.png'
    code, text, err = _run(
        [
            'cam',
            '--model',
            'test_resnet',
            '--checkpoint',
            ckpt,
            '--image',
            photo,
            '--out',
            out,
            '--img-size',
            96,
            '--overlay',  # the bare overlay at the photo's size (the default is the captioned panel)
        ],
        capsys,
    )
    assert code == 0, err
    box = [int(v) for v in re.search(r'box (\d+) (\d+) (\d+) (\d+)', text).groups()]
    assert 0 <= box[0] <= box[2] <= 89 and 0 <= box[1] <= box[3] <= 69
    with Image.open(out) as im:
        assert im.size == (90, 70)
        arr = np.asarray(im.convert('RGB'))
    assert all(tuple(arr[y, x]) == PRED_COLOR for y, x in box_outline(box))
    assert re.search(r'class [01] \[top-1\], p=0\.\d+', text)

    fig = tmp_path / 'f.png'
    argv = ['cam', '--model', 'test_resnet', '--checkpoint', ckpt, '--image', photo, '--out', fig]
    code, text, err = _run(
        [*argv, '--class', 1, '--img-size', 96, '--figure'],
        capsys,
    )
    assert code == 0, err
    assert 'class 1 [given]' in text
    box = [int(v) for v in re.search(r'box (\d+) (\d+) (\d+) (\d+)', text).groups()]
    with Image.open(fig) as im:
        assert im.size == (3 * 90 + 2 * PAD, 70)
        third = np.asarray(im.convert('RGB'))[:, 2 * (90 + PAD) :]
    assert all(tuple(third[y, x]) == PRED_COLOR for y, x in box_outline(box))


def test_cam_command_writes_a_readable_panel(tmp_path, ckpt, capsys):
    """Issue 14: a 96 px image gives the Figure-3 panel drawn 3x, captioned, with the legend."""
    photo = tmp_path / 'synth.png'
    write_image(photo, (96, 96), seed=5)
    out = tmp_path / 'panel.png'
    argv = ['cam', '--model', 'test_resnet', '--checkpoint', ckpt, '--image', photo, '--out', out]
    code, text, err = _run([*argv, '--img-size', 96], capsys)
    assert code == 0, err
    box = [int(v) for v in re.search(r'box (\d+) (\d+) (\d+) (\d+)', text).groups()]
    with Image.open(out) as im:
        arr = np.asarray(im.convert('RGB'))
    tile = 288
    assert arr.shape[1] == 3 * tile + 2 * PAD and arr.shape[0] > tile  # 3 columns, titles, caption
    with Image.open(photo) as im:
        big = np.repeat(np.repeat(np.asarray(im.convert('RGB')), 3, 0), 3, 1)
    top = next(t for t in range(80) if np.array_equal(arr[t : t + tile, :tile], big))
    third = arr[top : top + tile, 2 * (tile + PAD) :]
    big_box = (3 * box[0], 3 * box[1], 3 * box[2] + 2, 3 * box[3] + 2)
    assert all(tuple(third[y, x]) == PRED_COLOR for y, x in box_outline(big_box, width=3))
    below = arr[top + tile :]
    assert (below < 100).all(-1).sum() > 100  # the caption and legend text
    assert has_swatch(below, PRED_COLOR) and not has_swatch(below, GT_COLOR)  # no ground truth here
    code, _, err = _run([*argv, '--panel-size', 0], capsys)
    assert code == 2 and '--panel-size' in err


def test_cam_command_errors_are_one_line(tmp_path, ckpt, capsys):
    photo = tmp_path / 'photo.png'
    write_image(photo, (40, 30))
    base = ['cam', '--image', photo, '--img-size', 64]
    for argv, pattern in [
        (['--model', 'test_resnt', '--checkpoint', ckpt], r'unknown timm model .*closest: test_resnet'),
        (
            ['--model', 'test_resnet', '--checkpoint', ckpt, '--class', 2],
            r'--class 2 is out of range.*2 classes',
        ),
        (['--model', 'test_resnet', '--checkpoint', tmp_path / 'w.pth'], r'checkpoint not found'),
        (  # issue 10: ConvNeXt now has CAMs; a max-pooling head is still refused
            ['--model', 'test_resnet', '--num-classes', 2, '--model-kwargs', 'global_pool=max'],
            r'global-average-pool \+ linear',
        ),
    ]:
        code, _, err = _run(base + argv, capsys)
        assert code == 2, argv
        lines = [line for line in err.splitlines() if not line.startswith('timm-adl: ')]  # notes, warnings
        assert len(lines) == 1 and re.search(pattern, lines[0]), err
    pth = tmp_path / 'w.pth'
    pth.write_bytes(b'not a pickle we would open')
    code, _, err = _run(['cam', '--image', photo, '--model', 'test_resnet', '--checkpoint', pth], capsys)
    assert code == 2 and 'no pickles' in err
    code, _, err = _run(['cam', '--image', tmp_path / 'nope.jpg', '--model', 'test_resnet'], capsys)
    assert code == 2 and 'not found' in err


@pytest.fixture(scope='module')
def wsol_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, kind='boxes', n_classes=2, per_class=3)
    return root


def test_eval_vis_json_save_cams_and_scoremaps(tmp_path, ckpt, wsol_tree, capsys):
    vis, cams, js = tmp_path / 'vis', tmp_path / 'cams', tmp_path / 'r.json'
    data = ['--data-dir', wsol_tree, '--dataset', 'wsol-metadata', '--metadata-dir', wsol_tree / 'metadata']
    model = ['--model', 'test_resnet', '--checkpoint', ckpt]
    outputs = ['--vis', 3, '--vis-dir', vis, '--save-cams', cams, '--json', js]
    code, text, err = _run(
        [
            'eval',
            *model,
            *data,
            '--split',
            'test',
            '--threshold-from',
            'val',
            '--img-size',
            IMG,
            '--batch-size',
            4,
            *outputs,
        ],
        capsys,
    )
    assert code == 0, err
    for key in ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2'):
        assert key in text
    result = json.loads(js.read_text())
    m = result['metrics']
    for key in ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2'):
        assert 0.0 <= m[key] <= 100.0, key
    assert m['top1_loc'] <= m['gt_known_loc'] <= m['max_box_acc']  # fixed threshold <= best threshold
    assert result['num_images'] == 6 and result['split'] == 'test'
    cal = result['calibrated']
    assert cal['threshold_from'] == 'val'
    assert cal['metrics']['max_box_acc'] <= m['max_box_acc'] + 1e-9  # oracle is the max over thresholds
    assert cal['metrics']['max_box_acc_v2'] <= m['max_box_acc_v2'] + 1e-9

    ds = create_wsol_dataset(
        'wsol-metadata', wsol_tree, 'test', img_size=IMG, metadata_root=wsol_tree / 'metadata'
    )
    pngs = sorted(p.name for p in vis.glob('*.png'))
    assert pngs == ['0000_test_c0_0.jpg.png', '0001_test_c0_1.jpg.png', '0002_test_c0_2.jpg.png', 'grid.png']
    for k in range(3):
        image_id = ds.image_ids[k]
        cam = np.load(cams / f'{image_id}.npy')
        assert cam.shape == (IMG, IMG) and cam.dtype == np.float32 and cam.min() >= 0 and cam.max() <= 1
        with Image.open(vis / pngs[k]) as im:
            assert im.width == 3 * IMG + 2 * PAD and im.height > IMG  # a title line above
            panel = np.asarray(im.convert('RGB'))[im.height - IMG :, 2 * (IMG + PAD) :]
        est = paper_box(cam, 0.2)
        assert all(tuple(panel[y, x]) == PRED_COLOR for y, x in box_outline(est))
        red = (panel == GT_COLOR).all(-1)
        for gt in ds[k][2].numpy():
            edge = box_outline(gt)
            # every GT outline pixel is red, or green where the estimate is drawn over it
            assert all(tuple(panel[y, x]) in (GT_COLOR, PRED_COLOR) for y, x in edge)
            assert any(red[y, x] for y, x in edge - box_outline(est))
    with Image.open(vis / 'grid.png') as im:
        assert im.width == 3 * IMG + 2 * PAD and im.height == 3 * IMG + 2 * PAD

    # the saved maps, evaluated as another tool's score maps, give the same box metrics
    js2 = tmp_path / 's.json'
    code, text, err = _run(
        ['eval', '--scoremaps', cams, *data, '--split', 'test', '--img-size', IMG, '--json', js2], capsys
    )
    assert code == 0, err
    m2 = json.loads(js2.read_text())['metrics']
    for key in ('max_box_acc', 'max_box_acc_v2', 'gt_known_loc'):
        assert m2[key] == pytest.approx(m[key]), key
    assert 'top1_loc' not in m2  # needs predictions


def test_eval_errors_are_one_line(tmp_path, ckpt, wsol_tree, capsys):
    data = ['--data-dir', wsol_tree, '--dataset', 'wsol-metadata', '--metadata-dir', wsol_tree / 'metadata']
    model = ['--model', 'test_resnet', '--checkpoint', ckpt, '--img-size', IMG]
    for argv, pattern in [
        (
            ['eval', *model, '--data-dir', wsol_tree, '--dataset', 'wsol-meta'],
            r"did you mean 'wsol-metadata'",
        ),
        (['eval', *model, *data, '--split', 'nope'], r'nope'),
        (['eval', *model, *data, '--threshold-from', 'test'], r'oracle'),
        (['eval', *data], r'--model .*required'),
        (['eval', '--scoremaps', tmp_path, *data, '--img-size', IMG], r'score map of .* not found'),
    ]:
        code, _, err = _run(argv, capsys)
        assert code == 2, argv
        lines = [line for line in err.strip().splitlines() if not line.startswith('timm-adl: ')]
        assert len(lines) == 1 and re.search(pattern, lines[0]), err


def test_eval_masks_gives_pxap(tmp_path, ckpt, capsys):
    root = tmp_path / 'oi'
    make_fake_wsol_metadata(root, kind='masks', splits=('test',), n_classes=2, per_class=2)
    js = tmp_path / 'm.json'
    data = ['--data-dir', root, '--dataset', 'wsol-metadata', '--metadata-dir', root / 'metadata']
    data += ['--mask-dir', root / 'masks']
    code, text, err = _run(
        ['eval', '--model', 'test_resnet', '--checkpoint', ckpt, *data, '--img-size', IMG, '--json', js],
        capsys,
    )
    assert code == 0, err
    m = json.loads(js.read_text())['metrics']
    assert 0.0 <= m['pxap'] <= 100.0 and 0.0 <= m['top1_clas'] <= 100.0
    assert 'max_box_acc' not in m and 'pxap' in text


def test_model_kwargs_rebuild_a_recipe_model(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model('resnet10t', num_classes=3, channels=(8, 8, 16, 16), stem_width=8)
    ck = tmp_path / 'r.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ck))
    photo = tmp_path / 'p.jpg'
    write_image(photo, (50, 40))
    base = ['cam', '--model', 'resnet10t', '--checkpoint', ck, '--image', photo, '--out', tmp_path / 'o.png']
    code, text, err = _run([*base, '--model-kwargs', 'channels=[8,8,16,16]', 'stem_width=8'], capsys)
    assert code == 0, err
    assert 'class ' in text and (tmp_path / 'o.png').is_file()
    code, _, err = _run(base, capsys)  # without them the weights do not fit
    assert code == 2 and 'cannot load' in err and len(err.strip().splitlines()) == 1
    code, _, err = _run([*base, '--model-kwargs', 'channels'], capsys)
    assert code == 2 and 'KEY=VALUE' in err
