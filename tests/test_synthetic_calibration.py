"""The calibration claim of docs/synthetic_calibration.md, measured again: the CAM baseline of the
``'default'`` synthetic set lands in CUB's fair-protocol range on ``val``.

This trains the demo's CAM recipe at its full budget (3,000 images, 4 epochs; about a minute on 2 CPU
cores) through the study runner, the same path as ``timm-adl study``; ADL is never trained here, as in
the calibration rule. The range is the issue's (MaxBoxAccV2 roughly 55-65, Top-1 Clas below 95 %), not the
figure one machine measured (val 58.3 / 77.2), so a change of CPU or BLAS does not fail it while a change
of the data design or the recipe that leaves CUB's range does.
"""

from __future__ import annotations

import pytest
import yaml

from timm_adl.study import load_study, run_study


@pytest.mark.slow
def test_default_set_cam_baseline_on_val_is_in_cubs_range(tmp_path):
    study = {
        'name': 'calibration',
        'data': {'synthetic': 'default', 'seed': 0},
        'seeds': [0],
        'eval_split': 'val',
        'cells': [{'name': 'cam', 'recipe': 'synthetic/cam'}],
    }
    path = tmp_path / 'calibration.yaml'
    path.write_text(yaml.safe_dump(study))
    result = run_study(
        load_study(path), tmp_path / 'out', device='cpu', progress=False, figure_images=2, log=print
    )
    (run,) = result.cells[0].runs
    assert run.split == 'val' and run.num_images == 600
    assert run.metrics['top1_clas'] < 95.0, run.metrics
    assert 55.0 <= run.metrics['max_box_acc_v2'] <= 65.0, run.metrics
