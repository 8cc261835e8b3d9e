"""`timm-adl eval` / `cam` normalise inputs as the checkpoint was trained, not with the model's ImageNet default.

A tiny run trains with a recipe's own ``data.mean`` / ``data.std`` (0.5 / 0.25, as the synthetic demo's);
the expected CAMs are computed here by hand (PIL resize, then ``(x - mean) / std``) and compared with what
the commands computed.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision.transforms.functional as TF
import yaml
from fakes import make_fake_wsol_metadata, write_image
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from timm_adl.cam import compute_cams
from timm_adl.cli import main
from timm_adl.train import load_config, run_training
from timm_adl.train.checkpoint import read_data_config
from timm_adl.train.engine import train_mean_std

KWARGS = dict(channels=[8, 16, 32, 64], stem_width=8)
MODEL_ARGS = ['--model', 'resnet10t', '--model-kwargs', 'channels=[8,16,32,64]', 'stem_width=8']
MEAN, STD, SIZE = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 64  # 64 px: a 2x2 last map
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # resnet10t's pretrained_cfg


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, n_classes=2, per_class=3)
    return root


@pytest.fixture(scope='module')
def run_dir(data_root, tmp_path_factory) -> Path:
    """A finished `timm-adl train` run whose recipe sets its own normalisation."""
    out = tmp_path_factory.mktemp('run') / 'run'
    recipe = dict(
        model='resnet10t',
        model_kwargs=KWARGS,
        data=dict(name='wsol-metadata', root=str(data_root), mean=list(MEAN), std=list(STD)),
        img_size=SIZE,
        batch_size=3,
        epochs=1,
        num_workers=0,
        optim=dict(lr=0.05),
        output_dir=str(out),
    )
    run_training(load_config(recipe), progress=False)
    return out


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _model(weights: Path) -> torch.nn.Module:
    model = timm.create_model('resnet10t', num_classes=2, **KWARGS)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _by_hand(path: Path, size: int, mean, std) -> torch.Tensor:
    """The evaluation input of one image, without the package's transforms: squash-resize, scale, normalise."""
    with Image.open(path) as im:
        x = TF.to_tensor(TF.resize(im.convert('RGB'), [size, size], TF.InterpolationMode.BILINEAR))
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _hand_cams(weights: Path, data_root: Path, mean, std, size: int = SIZE) -> dict[str, np.ndarray]:
    """GT-class CAMs of the test split, each image normalised by hand with ``mean`` / ``std``."""
    lines = (data_root / 'metadata' / 'test' / 'class_labels.txt').read_text().split()
    items = [line.split(',') for line in lines]
    x = torch.stack([_by_hand(data_root / image_id, size, mean, std) for image_id, _ in items])
    labels = torch.tensor([int(label) for _, label in items])
    with torch.no_grad():
        cams = compute_cams(_model(weights), x, labels).cams_gt.numpy()
    return {image_id: cam for (image_id, _), cam in zip(items, cams, strict=True)}


def _eval(checkpoint, data_root: Path, tmp_path: Path, capsys, *extra, model_args=MODEL_ARGS):
    """Run `timm-adl eval` with --save-cams and --json; ``(json result, saved CAMs, stderr)``."""
    js, cams = tmp_path / 'r.json', tmp_path / 'cams'
    data = ['--data-dir', data_root, '--dataset', 'wsol-metadata', '--metadata-dir', data_root / 'metadata']
    argv = ['eval', *model_args, '--checkpoint', checkpoint, *data, '--save-cams', cams, '--json', js, *extra]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    result = json.loads(js.read_text())
    saved = {p.relative_to(cams).as_posix()[: -len('.npy')]: np.load(p) for p in cams.rglob('*.npy')}
    return result, saved, err


def _assert_cams(saved: dict, expected: dict) -> None:
    assert saved.keys() == expected.keys()
    for image_id, cam in expected.items():
        np.testing.assert_allclose(saved[image_id], cam, atol=1e-5, err_msg=image_id)


def _without_metadata(src: Path, dst: Path) -> Path:
    """The weights of ``src`` as a checkpoint of an older timm-adl (no data config recorded)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(load_file(str(src)), str(dst), metadata={'format': 'pt'})
    return dst


def test_trainer_records_the_input_in_every_weights_file(run_dir):
    names = [
        'best.safetensors',
        'last.safetensors',
        *(p.name for p in (run_dir / 'resume').glob('weights-*')),
    ]
    assert len(names) == 3
    for name in names:
        path = run_dir / name if (run_dir / name).is_file() else run_dir / 'resume' / name
        assert read_data_config(path) == {'mean': MEAN, 'std': STD, 'input_size': (3, SIZE, SIZE)}, name
        with safe_open(str(path), framework='pt') as f:
            assert f.metadata()['format'] == 'pt'


def test_train_mean_std_resolves_each_value():
    model = timm.create_model('resnet10t', num_classes=2, **KWARGS)
    cfg = load_config({'model': 'resnet10t', 'data': {'mean': [0.1, 0.2, 0.3]}})
    assert train_mean_std(cfg, model) == ((0.1, 0.2, 0.3), IMAGENET[1])
    with pytest.raises(ValueError, match=r'data\.std.*> 0'):
        load_config({'model': 'resnet10t', 'data': {'std': [0.2, 0.0, 0.2]}})


def test_eval_uses_the_checkpoint_normalization(run_dir, data_root, tmp_path, capsys):
    ckpt = run_dir / 'best.safetensors'
    result, saved, err = _eval(ckpt, data_root, tmp_path, capsys)
    assert result['normalization'] == {
        'mean': list(MEAN),
        'std': list(STD),
        'source': 'checkpoint',
        'file': str(ckpt),
    }
    assert result['img_size'] == SIZE  # the training size, not resnet10t's 176
    assert re.search(r'normalisation mean 0\.5 0\.5 0\.5, std 0\.25 0\.25 0\.25 from the checkpoint', err)
    expected = _hand_cams(ckpt, data_root, MEAN, STD)
    _assert_cams(saved, expected)
    # the check has teeth: the ImageNet statistics the command used before give other maps
    wrong = _hand_cams(ckpt, data_root, *IMAGENET)
    assert max(np.abs(wrong[k] - expected[k]).max() for k in expected) > 1e-3


def test_flags_override_the_checkpoint(run_dir, data_root, tmp_path, capsys):
    ckpt = run_dir / 'best.safetensors'
    mean, std = (0.4, 0.45, 0.5), (0.3, 0.2, 0.25)
    flags = ['--mean', *mean, '--std', *std, '--img-size', 96]
    result, saved, err = _eval(ckpt, data_root, tmp_path / 'a', capsys, *flags)
    assert result['normalization'] == {'mean': list(mean), 'std': list(std), 'source': 'flag', 'file': None}
    assert result['img_size'] == 96 and 'from the --mean/--std flags' in err
    _assert_cams(saved, _hand_cams(ckpt, data_root, mean, std, size=96))

    result, saved, _ = _eval(ckpt, data_root, tmp_path / 'b', capsys, '--std', *std)
    norm = result['normalization']
    assert norm['source'] == 'mixed' and norm['sources'] == {'mean': 'checkpoint', 'std': 'flag'}
    assert norm['mean'] == list(MEAN) and norm['std'] == list(std) and norm['file'] == str(ckpt)
    _assert_cams(saved, _hand_cams(ckpt, data_root, MEAN, std))


@pytest.mark.parametrize(
    'flags, message',
    [
        (['--std', 0.25, 0, 0.25], r"--std: '0' must be > 0"),
        (['--std', 0.25, -0.1, 0.25], r"--std: '-0\.1' must be > 0"),
        (['--std', 0.25, 0.25], r'--std takes 3 values \(R G B\), got 2: 0\.25 0\.25'),
        (['--mean', 0.5, 'x', 0.5], r"--mean: 'x' is not a number"),
        (['--mean', 'nan', 0.5, 0.5], r"--mean: 'nan' is not a finite number"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, message, run_dir, data_root, tmp_path, capsys):
    photo = tmp_path / 'p.jpg'
    write_image(photo, (40, 30))
    ckpt = run_dir / 'best.safetensors'
    data = ['--data-dir', data_root, '--dataset', 'wsol-metadata', '--metadata-dir', data_root / 'metadata']
    for argv in (
        ['eval', *MODEL_ARGS, '--checkpoint', ckpt, *data, *flags],
        ['cam', *MODEL_ARGS, '--checkpoint', ckpt, '--image', photo, '--out', tmp_path / 'o.png', *flags],
    ):
        code, _, err = _run(argv, capsys)
        assert code == 2, argv
        lines = err.strip().splitlines()
        assert len(lines) == 1 and re.search(message, lines[0]), err


def test_scoremaps_reject_normalization_flags(data_root, tmp_path, capsys):
    data = ['--data-dir', data_root, '--dataset', 'wsol-metadata', '--metadata-dir', data_root / 'metadata']
    code, _, err = _run(['eval', '--scoremaps', tmp_path, *data, '--mean', 0.5, 0.5, 0.5], capsys)
    assert code == 2 and '--scoremaps evaluates no model' in err


def test_checkpoint_without_record_falls_back_to_pretrained_cfg(run_dir, data_root, tmp_path, capsys):
    old = _without_metadata(run_dir / 'best.safetensors', tmp_path / 'old' / 'w.safetensors')
    assert read_data_config(old) is None
    result, saved, err = _eval(old, data_root, tmp_path, capsys, '--img-size', SIZE)
    assert result['normalization'] == {
        'mean': list(IMAGENET[0]),
        'std': list(IMAGENET[1]),
        'source': 'pretrained_cfg',
        'file': None,
    }
    assert "resnet10t's pretrained_cfg" in err and 'records no training normalisation' in err
    _assert_cams(saved, _hand_cams(old, data_root, *IMAGENET))


def test_older_run_folder_uses_its_config_yaml(run_dir, data_root, tmp_path, capsys):
    folder = tmp_path / 'oldrun'
    old = _without_metadata(run_dir / 'best.safetensors', folder / 'best.safetensors')
    shutil.copyfile(run_dir / 'config.yaml', folder / 'config.yaml')
    result, saved, err = _eval(old, data_root, tmp_path / 'a', capsys)
    norm = result['normalization']
    assert norm['source'] == 'run_config' and norm['file'] == str(folder / 'config.yaml')
    assert norm['mean'] == list(MEAN) and norm['std'] == list(STD) and result['img_size'] == SIZE
    _assert_cams(saved, _hand_cams(old, data_root, MEAN, STD))

    # a config of another model is not this checkpoint's: ignored, with a warning
    cfg = yaml.safe_load((folder / 'config.yaml').read_text())
    (folder / 'config.yaml').write_text(yaml.safe_dump({**cfg, 'model': 'resnet18'}))
    result, _, err = _eval(old, data_root, tmp_path / 'b', capsys, '--img-size', SIZE)
    assert result['normalization']['source'] == 'pretrained_cfg'
    assert 'config of a resnet18 run, not resnet10t: ignored' in err


def test_cam_command_normalises_as_the_checkpoint(run_dir, tmp_path, capsys, monkeypatch):
    import timm_adl.cam

    photo = tmp_path / 'photo.png'
    write_image(photo, (50, 40), seed=5)
    seen = []
    real = timm_adl.cam.compute_cams

    def spy(model, x, *args, **kwargs):
        seen.append(x.detach().cpu().clone())
        return real(model, x, *args, **kwargs)

    monkeypatch.setattr(timm_adl.cam, 'compute_cams', spy)
    ckpt = run_dir / 'best.safetensors'
    argv = ['cam', *MODEL_ARGS, '--checkpoint', ckpt, '--image', photo, '--out', tmp_path / 'o.png']
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    assert 'std 0.25 0.25 0.25 from the checkpoint' in err and f'input {SIZE} px' in err
    torch.testing.assert_close(seen[-1][0], _by_hand(photo, SIZE, MEAN, STD), atol=1e-6, rtol=0)

    code, _, err = _run([*argv, '--mean', 0.1, 0.2, 0.3, '--std', 1, 1, 1, '--img-size', 48], capsys)
    assert code == 0, err
    torch.testing.assert_close(
        seen[-1][0], _by_hand(photo, 48, (0.1, 0.2, 0.3), (1, 1, 1)), atol=1e-6, rtol=0
    )


def test_hub_export_carries_the_training_normalization(run_dir, data_root, tmp_path, capsys):
    """`timm-adl push` writes the recorded input into config.json's pretrained_cfg (even when the recipe
    leaves it null), and eval of the folder uses it."""
    weights = tmp_path / 'w' / 'best.safetensors'
    weights.parent.mkdir()
    shutil.copyfile(run_dir / 'best.safetensors', weights)
    cfg = yaml.safe_load((run_dir / 'config.yaml').read_text())
    cfg['data'].update(mean=None, std=None)  # the weights' record is the truth
    recipe = tmp_path / 'recipe.yaml'
    recipe.write_text(yaml.safe_dump(cfg))
    folder = tmp_path / 'hub'
    argv = ['push', weights, '--recipe', recipe, '--repo-id', 'acme/tiny', '--dry-run', folder]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    pretrained = json.loads((folder / 'config.json').read_text())['pretrained_cfg']
    assert pretrained['mean'] == list(MEAN) and pretrained['std'] == list(STD)
    assert pretrained['input_size'] == [3, SIZE, SIZE]

    result, saved, err = _eval(folder, data_root, tmp_path / 'e', capsys, model_args=[])
    assert result['normalization'] == {
        'mean': list(MEAN),
        'std': list(STD),
        'source': 'checkpoint',
        'file': str(folder / 'config.json'),
    }
    assert result['img_size'] == SIZE
    _assert_cams(saved, _hand_cams(weights, data_root, MEAN, STD))
