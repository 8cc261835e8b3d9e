"""timm_adl.evaluate: the one model -> CAMs -> boxes -> metrics loop, in one process and under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from fakes import make_fake_wsol_metadata
from safetensors.torch import load_file, save_file

import timm_adl
from timm_adl.cam import compute_cams
from timm_adl.cli import main
from timm_adl.data import ShardSampler, create_wsol_dataset, create_wsol_loader, wsol_collate
from timm_adl.metrics import WSOLEvaluator, WSOLResult

IMG = 48


@pytest.fixture(scope='module')
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('wsol')
    make_fake_wsol_metadata(root, splits=('val',), n_classes=3, per_class=3)  # 9 images: uneven shards
    return root


@pytest.fixture(scope='module')
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = timm.create_model('test_resnet', num_classes=3)
    path = tmp_path_factory.mktemp('w') / 'w.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _model(weights: Path):
    model = timm.create_model('test_resnet', num_classes=3)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def _dataset(root: Path):
    return create_wsol_dataset(
        'wsol-metadata', root, 'val', is_training=False, img_size=IMG, metadata_root=root / 'metadata'
    )


def test_evaluate_equals_a_hand_written_loop(tree, weights):
    model, ds = _model(weights), _dataset(tree)
    result = timm_adl.evaluate(model, create_wsol_loader(ds, 4, is_training=False))
    ev = WSOLEvaluator(num_threads=1)
    with torch.no_grad():
        for images, labels, boxes in create_wsol_loader(ds, 4, is_training=False):
            r = compute_cams(model, images, labels)
            ev.update(r.cams_gt, r.cams_top1, boxes, r.logits, labels)
    expected = ev.result()
    assert isinstance(result, WSOLResult) and result.cam_method == 'cam'
    assert result.metrics() == expected.metrics() and result.num_images == 9
    assert result.to_dict() == {**expected.to_dict(), 'cam_method': 'cam'}
    assert not model.training


def test_evaluate_refuses_an_unknown_cam_method(tree, weights):
    loader = create_wsol_loader(_dataset(tree), 4, is_training=False)
    with pytest.raises(ValueError, match=r"CAM method must be one of .*'camm'.*did you mean 'cam'"):
        timm_adl.evaluate(_model(weights), loader, cam_method='camm')


def test_a_box_off_the_map_names_the_image(tree, weights):
    ds = _dataset(tree)

    class Unscaled(torch.utils.data.Dataset):  # boxes left at 10x the map: never resized
        image_ids = ds.image_ids

        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            image, label, boxes = ds[i]
            return image, label, torch.as_tensor(boxes) * 10

    loader = torch.utils.data.DataLoader(Unscaled(), batch_size=4, collate_fn=wsol_collate)
    with pytest.raises(
        ValueError, match=rf"image '{ds.image_ids[0]}': gt_boxes\[0\].*outside the {IMG}x{IMG}"
    ):
        timm_adl.evaluate(_model(weights), loader)


def test_eval_cli_reports_the_cam_method(tree, weights, tmp_path, capsys):
    js = tmp_path / 'r.json'
    argv = ['eval', '--model', 'test_resnet', '--checkpoint', weights, '--num-classes', 3, '--img-size', IMG]
    argv += ['--data-dir', tree, '--dataset', 'wsol-metadata', '--metadata-dir', tree / 'metadata']
    assert main([str(a) for a in [*argv, '--split', 'val', '--json', js]]) == 0
    out = capsys.readouterr().out
    assert json.loads(js.read_text())['cam_method'] == 'cam' and 'cam method' in out
    assert main([str(a) for a in [*argv, '--split', 'val', '--cam-method', 'grad']]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and '--cam-method' in err[0] and "'grad'" in err[0]


def test_recipe_key_cam_method_is_checked():
    from timm_adl.train import ConfigError, load_config

    assert load_config({'model': 'resnet18'}).cam_method == 'cam'
    with pytest.raises(ConfigError, match=r"'cam_method' must be one of .*did you mean 'cam'"):
        load_config({'model': 'resnet18', 'cam_method': 'camm'})


def test_card_names_the_cam_method():
    from timm_adl.hub.card import render_card

    kw = dict(
        model_name='m', repo_id=None, architecture='resnet18', base_architecture='resnet18', adl_points={},
        num_classes=3, num_params=10, input_size=(3, 32, 32), metrics={'max_box_acc': 50.0}, dataset='cub',
        split='test', recipe_file=None, recipe_source=None, heatmaps_file=None, license='mit',
    )  # fmt: skip
    assert 'Maps by CAM method: `gradcam`' in render_card(**kw, cam_method='gradcam')
    assert 'Maps by CAM method: not recorded' in render_card(**kw)


# torchrun's workers run this script: each rank scores its shard, the counts are summed over the ranks.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch, torch.distributed as dist, timm
    from safetensors.torch import load_file
    import timm_adl
    from timm_adl.data import ShardSampler, create_wsol_dataset, create_wsol_loader, wsol_collate
    torch.set_num_threads(1)
    dist.init_process_group('gloo')
    root, weights, out = sys.argv[1:4]
    model = timm.create_model('test_resnet', num_classes=3)
    model.load_state_dict(load_file(weights))
    ds = create_wsol_dataset('wsol-metadata', root, 'val', is_training=False, img_size=48,
                             metadata_root=os.path.join(root, 'metadata'))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=ShardSampler(ds), collate_fn=wsol_collate)
    result = timm_adl.evaluate(model.eval(), loader)
    with open(f'{out}.{dist.get_rank()}', 'w') as f:  # a file per rank: the ranks share one stdout pipe
        json.dump(result.to_dict(), f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_torchrun_two_processes_validate_like_one(tree, weights, tmp_path):
    script = tmp_path / 'child.py'
    script.write_text(CHILD)
    out = tmp_path / 'result.json'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(script)]
    cmd += [str(tree), str(weights), str(out)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1')
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads(Path(f'{out}.{r}').read_text()) for r in (0, 1)]
    ds = _dataset(tree)
    assert len(ShardSampler(ds, 2, 0)) != len(ShardSampler(ds, 2, 1))  # uneven shards, no image twice
    single = timm_adl.evaluate(_model(weights), create_wsol_loader(ds, 2, is_training=False)).to_dict()
    assert ranks[0] == ranks[1] == single
    assert single['num_images'] == 9 and np.isfinite(single['metrics']['max_box_acc'])
