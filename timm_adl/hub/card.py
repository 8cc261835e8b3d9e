"""The model card (``README.md``) of a pushed checkpoint: Hub metadata, metrics table, CAM picture, usage,
license and citations. Metadata is built with ``huggingface_hub.ModelCardData``, so the Hub parses it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from .datasets import dataset_info

__all__ = ['METRIC_NAMES', 'dataset_display_name', 'render_card', 'scalar_metrics']

# Metric keys (WSOLEvaluator.compute() / MaskEvaluator, in percent) -> column names used by the WSOL papers.
METRIC_NAMES = {
    'top1_clas': 'Top-1 Clas',
    'gt_known_loc': 'GT-known Loc',
    'top1_loc': 'Top-1 Loc',
    'max_box_acc': 'MaxBoxAcc',
    'max_box_acc_v2': 'MaxBoxAccV2',
    'pxap': 'PxAP',
}
_METRIC_NOTES = {
    'top1_clas': 'top-1 classification accuracy',
    'gt_known_loc': 'box IoU >= 0.5 with the ground-truth class CAM, fixed CAM threshold',
    'top1_loc': 'correct top-1 class and box IoU >= 0.5, fixed CAM threshold',
    'max_box_acc': 'box accuracy at IoU 0.5, best CAM threshold (Choe et al., CVPR 2020)',
    'max_box_acc_v2': 'mean box accuracy over IoU 0.3/0.5/0.7, best threshold, all contours',
    'pxap': 'pixel average precision of the CAM against the masks',
}
ADL_BIBTEX = """@inproceedings{choe2019adl,
  title     = {Attention-Based Dropout Layer for Weakly Supervised Object Localization},
  author    = {Choe, Junsuk and Shim, Hyunjung},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2019}
}"""
WSOLEVAL_BIBTEX = """@inproceedings{choe2020wsoleval,
  title     = {Evaluating Weakly Supervised Object Localization Methods Right},
  author    = {Choe, Junsuk and Oh, Seong Joon and Lee, Seungho and Chun, Sanghyuk and Akata, Zeynep and Shim, Hyunjung},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2020}
}"""
TIMM_BIBTEX = """@misc{rw2019timm,
  author       = {Ross Wightman},
  title        = {PyTorch Image Models},
  year         = {2019},
  publisher    = {GitHub},
  journal      = {GitHub repository},
  doi          = {10.5281/zenodo.4414861},
  howpublished = {\\url{https://github.com/huggingface/pytorch-image-models}}
}"""


def dataset_display_name(name: str) -> str:
    """``cub`` -> ``CUB-200-2011`` and the other aliases of :mod:`timm_adl.hub.datasets`; else as given."""
    info = dataset_info(name)
    return info.name if info is not None else name.strip()


def _slug(text: str) -> str:
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric scalars of a metrics dict (curves and other lists are left out), checked to be finite."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise ValueError(f'metric {key!r} is {value!r}; the card needs finite numbers')
        out[str(key)] = float(value)
    return out


def _points_table(points: Mapping[str, Mapping[str, Any]]) -> str:
    # use_drop / use_importance: a point records them only when switched off (see surgery.adl_points)
    rows = [
        '| after | drop_rate | gamma | per_sample | use_drop | use_importance |',
        '|---|---|---|---|---|---|',
    ]
    for name, s in points.items():
        rows.append(
            f'| `{name}` | {s.get("drop_rate")} | {s.get("gamma")} | {s.get("per_sample", False)} '
            f'| {s.get("use_drop", True)} | {s.get("use_importance", True)} |'
        )
    return '\n'.join(rows)


def _metrics_table(metrics: Mapping[str, float]) -> str:
    rows = ['| Metric | Value (%) | Definition |', '|---|---|---|']
    for key, label in METRIC_NAMES.items():
        if key in metrics:
            rows.append(f'| {label} | {metrics[key]:.2f} | {_METRIC_NOTES[key]} |')
    return '\n'.join(rows)


def render_card(
    *,
    model_name: str,
    repo_id: str | None,
    architecture: str,
    base_architecture: str,
    adl_points: Mapping[str, Mapping[str, Any]],
    num_classes: int,
    num_params: int,
    input_size: Sequence[int],
    metrics: Mapping[str, float] | None,
    dataset: str | None,
    split: str | None,
    recipe_file: str | None,
    recipe_source: str | None,
    heatmaps_file: str | None,
    license: str,
    description: str | None = None,
    cam_method: str | None = None,
    dataset_terms: str | None = None,
    dataset_url: str | None = None,
) -> str:
    """The full ``README.md`` text: YAML metadata block, then the card body in Markdown.

    ``cam_method`` names how the maps behind the metrics were made (``timm_adl.cam.CAM_METHODS``); the
    results section says it, as a box metric means little without it. ``dataset_terms`` (and
    ``dataset_url``, where they are stated) are the training data's terms of use, quoted in the licence
    section (``timm_adl.hub.datasets``).
    """
    metrics = dict(metrics or {})
    shown = {k: v for k, v in metrics.items() if k in METRIC_NAMES}
    eval_results = [
        EvalResult(
            task_type='image-classification',
            task_name='Weakly Supervised Object Localization',
            dataset_type=_slug(dataset or 'unknown'),
            dataset_name=dataset or 'unknown',
            dataset_split=split,
            metric_type='accuracy' if key == 'top1_clas' else key,
            metric_name=METRIC_NAMES[key],
            metric_value=round(value, 4),
        )
        for key, value in shown.items()
    ]
    data = ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        license=license,
        tags=[
            'image-classification',
            'timm',
            'timm-adl',
            'wsol',
            'adl',
            'weakly-supervised-object-localization',
        ],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    load_name = f'hf-hub:{repo_id}' if repo_id else 'local-dir:/path/to/this/folder'
    lines = [
        '---',
        data.to_yaml(),
        '---',
        f'# Model card for {model_name}',
        '',
        description
        or (
            f'A `{base_architecture}` classifier with Attention-based Dropout Layers (ADL, Choe & Shim, CVPR 2019), '
            'trained for weakly supervised object localization (WSOL): boxes come from its class activation maps '
            '(CAM), learnt from image-level labels only.'
            if adl_points
            else f'A `{base_architecture}` classifier trained for weakly supervised object localization (WSOL) '
            'with class activation maps (CAM), the baseline the ADL paper compares against.'
        ),
        '',
        '## Model details',
        f'- **Architecture:** `{architecture}`'
        + (f' (base `{base_architecture}`)' if base_architecture != architecture else ''),
        f'- **Classes:** {num_classes}',
        f'- **Parameters (M):** {num_params / 1e6:.2f}',
        f'- **Image size:** {input_size[-2]} x {input_size[-1]}',
        f'- **Training data:** {dataset or "not recorded"}'
        + (f' ([terms of use]({dataset_url}))' if dataset and dataset_url else ''),
        '- **Training recipe:** '
        + (
            f'[`{recipe_file}`]({recipe_file})'
            + (f' (from `{recipe_source}`)' if recipe_source else '')
            + f'; retrain with `timm-adl train {recipe_file}`'
            if recipe_file
            else 'not recorded'
        ),
        '- **Papers:** [Attention-based Dropout Layer for Weakly Supervised Object Localization](https://arxiv.org/abs/1908.10028)',
        '',
    ]
    if adl_points:
        lines += [
            'ADL layers (identity at inference; active only in training mode):',
            '',
            _points_table(adl_points),
            '',
        ]
    if shown:
        lines += [f'## Results on {dataset}, {split} split', '', _metrics_table(shown), '']
        method = f'`{cam_method}`' if cam_method else 'not recorded (plain CAM unless stated otherwise)'
        lines += [f'Maps by CAM method: {method} (`timm_adl.compute_cams(..., method=...)`).', '']
        others = {k: v for k, v in metrics.items() if k not in METRIC_NAMES}
        if others:
            lines += ['Other values: ' + ', '.join(f'`{k}` = {v:g}' for k, v in others.items()), '']
    if heatmaps_file:
        lines += ['## Class activation maps', '', f'![CAM heatmaps]({heatmaps_file})', '']
    lines += [
        '## Usage',
        '',
        '`import timm_adl` registers the architecture with timm; without it timm raises `Unknown model`.',
        '',
        '```python',
        'import timm',
        'import timm_adl',
        '',
        f"model = timm.create_model('{load_name}', pretrained=True).eval()",
        "# or: model, label_names = timm_adl.load('" + (repo_id or '/path/to/this/folder') + "')",
        'config = timm.data.resolve_data_config({}, model=model)',
        'transform = timm.data.create_transform(**config)',
        '```',
        '',
        'Localization: the CAM of class k is `get_classifier().weight[k]` applied to `forward_features(x)`; '
        '`timm-adl cam` and `timm-adl eval` compute CAMs, boxes and the WSOL metrics.',
        '',
        '## License',
        '',
        f'The weights are released under `{license}`. They were trained on {dataset or "the data set above"}, '
        + (
            f'whose own terms of use also apply: {dataset_terms}'
            if dataset_terms
            else 'whose own terms of use also apply.'
        ),
        '',
        '## Citation',
        '',
        '```bibtex',
        ADL_BIBTEX,
        '```',
    ]
    if any(k in shown for k in ('max_box_acc', 'max_box_acc_v2', 'pxap')):
        lines += ['', '```bibtex', WSOLEVAL_BIBTEX, '```']
    lines += ['', '```bibtex', TIMM_BIBTEX, '```', '']
    return '\n'.join(lines)
