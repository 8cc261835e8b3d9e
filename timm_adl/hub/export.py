"""Write a trained model as a Hub-ready folder (``save_pretrained``) and upload it in one commit (``push_to_hub``)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import yaml
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.utils import validate_repo_id
from timm.models._hub import save_config_for_hf  # not re-exported by timm.models; stable since timm 0.9
from torch import nn

from ..version import __version__
from .card import dataset_display_name, render_card, scalar_metrics
from .checkpoints import ADL_PAPER, ADL_PAPER_ID, WEIGHTS_NAME, WSOL_CHECKPOINTS
from .datasets import DatasetInfo, dataset_info, infer_dataset
from .spec import describe_model

__all__ = [
    'CONFIG_NAME',
    'HEATMAPS_NAME',
    'METRICS_NAME',
    'README_NAME',
    'RECIPE_NAME',
    'push_to_hub',
    'save_pretrained',
]

CONFIG_NAME = 'config.json'
README_NAME = 'README.md'
RECIPE_NAME = 'recipe.yaml'
METRICS_NAME = 'metrics.json'
HEATMAPS_NAME = 'heatmaps.png'
_PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _read_recipe(recipe: Any) -> tuple[str | None, dict[str, Any], str | None]:
    """``(yaml_text, parsed, source_path)`` of a recipe given as a path, a mapping or a config dataclass."""
    if recipe is None:
        return None, {}, None
    if isinstance(recipe, (str, os.PathLike)):
        path = Path(recipe)
        if not path.is_file():
            raise FileNotFoundError(f'recipe file not found: {path}')
        text = path.read_text(encoding='utf-8')
        parsed = yaml.safe_load(text) or {}
        if not isinstance(parsed, dict):
            raise ValueError(f'recipe {path} must be a YAML mapping, got {type(parsed).__name__}')
        return text, parsed, str(recipe)
    if dataclasses.is_dataclass(recipe) and not isinstance(recipe, type):
        recipe = dataclasses.asdict(recipe)
    if not isinstance(recipe, Mapping):
        raise TypeError(
            f'recipe must be a YAML path, a mapping or a config dataclass, got {type(recipe).__name__}'
        )
    parsed = yaml.safe_load(yaml.safe_dump(dict(recipe), sort_keys=False))
    return yaml.safe_dump(parsed, sort_keys=False), parsed, None


def _dataset(given: Any, recipe: Mapping[str, Any]) -> DatasetInfo | None:
    """The data set the card names: as given (a name or an alias), else inferred from the recipe's data."""
    if given:
        name = dataset_display_name(str(given))
        known = dataset_info(name)
        return known or DatasetInfo(name, '')
    return infer_dataset(recipe.get('data'))


def _data_config(recipe: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Preprocessing recorded in config.json: WSOL's evaluation transform (resize to the training size, no crop),
    at the recipe's image size and normalisation when it has them."""
    out: dict[str, Any] = {'crop_pct': 1.0, 'crop_mode': 'squash'}
    if isinstance(recipe.get('img_size'), int):
        out['input_size'] = (3, recipe['img_size'], recipe['img_size'])
    data = recipe.get('data') if isinstance(recipe.get('data'), Mapping) else {}
    for key in ('mean', 'std'):
        if data.get(key):
            out[key] = tuple(data[key])
    out.update(given or {})
    return out


def _label_names(model: nn.Module, label_names: Any, num_classes: int) -> list[str] | None:
    if label_names is None:
        label_names = getattr(model, 'pretrained_cfg', {}).get('label_names')
        if label_names is None or len(label_names) != num_classes:
            return None
    names = [str(n) for n in label_names]
    if len(names) != num_classes:
        raise ValueError(f'label_names has {len(names)} names but the model has {num_classes} classes')
    return names


def _check_canonical_repo(repo_id: str | None, architecture: str, num_classes: int) -> None:
    """A paper checkpoint's repo is what its timm tag downloads: it must hold exactly that architecture."""
    ckpt = next((c for c in WSOL_CHECKPOINTS.values() if c.repo_id == repo_id), None)
    if ckpt is not None and (architecture, num_classes) != (ckpt.architecture, ckpt.num_classes):
        raise ValueError(
            f'{repo_id} is the repo of the timm tag {ckpt.name!r}: it needs a {ckpt.architecture} with '
            f'{ckpt.num_classes} classes, got {architecture} with {num_classes}'
        )


def _move_into_place(built: Path, folder: Path, overwrite: bool) -> None:
    """Rename the finished folder onto ``folder``: readers see the old folder or the new one, never a mix."""
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f'{folder} exists and is not a folder')
    if folder.is_dir() and any(folder.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f'{folder} exists and is not empty; pass overwrite=True (--overwrite) to replace it'
            )
        backup = Path(tempfile.mkdtemp(prefix=f'.{folder.name}.old-', dir=folder.parent))
        os.replace(folder, backup / folder.name)
        try:
            os.replace(built, folder)
        except OSError:
            os.replace(backup / folder.name, folder)
            raise
        finally:
            shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(built, folder)  # onto a missing or empty folder


def save_pretrained(
    model: nn.Module,
    folder: str | os.PathLike,
    metrics: Mapping[str, Any] | None = None,
    recipe: Any = None,
    *,
    repo_id: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    label_names: Any = None,
    heatmaps: str | os.PathLike | None = None,
    license: str | None = None,
    model_name: str | None = None,
    description: str | None = None,
    data_config: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a Hub model folder; returns the folder.

    Files: ``model.safetensors`` (weights), ``config.json`` (timm's format: ``architecture``, ``num_classes``,
    ``label_names``, ``model_args`` holding the ADL placement and settings, ``pretrained_cfg``; plus a
    ``timm_adl`` block), ``README.md`` (model card), and when given ``recipe.yaml``, ``metrics.json``,
    ``heatmaps.png``.

    Args:
        model: a model from ``timm.create_model`` (registered ``*_adl`` or any timm model), optionally passed
            through ``timm_adl.insert``. Checked: the config must rebuild exactly this model.
        metrics: WSOL metrics in percent, keyed as ``WSOLEvaluator.compute()`` (``top1_clas``, ``gt_known_loc``,
            ``top1_loc``, ``max_box_acc``, ``max_box_acc_v2``); may hold ``dataset`` and ``split``.
        recipe: the training config: a YAML path, a mapping or a config dataclass.
        repo_id: the Hub repo the folder is meant for (used in the card's usage lines).
        dataset, split: where the metrics were measured (required with metrics; ``dataset`` defaults to the
            metrics' or the recipe's ``data.name``).
        heatmaps: a PNG (e.g. the CAM grid of ``timm-adl cam``) shown on the card.
        data_config: preprocessing to record (timm data config keys); default: WSOL's evaluation transform,
            resize to the recipe's ``img_size`` without crop (``crop_mode='squash'``, ``crop_pct=1``).
        overwrite: replace an existing non-empty ``folder``.

    The folder is built next to ``folder`` and renamed into place, so it is never left half written.
    """
    folder = Path(folder)
    if repo_id is not None:
        validate_repo_id(repo_id)
    num_classes = int(getattr(model, 'num_classes', 0))
    labels = _label_names(model, label_names, num_classes)
    recipe_text, recipe_dict, recipe_source = _read_recipe(recipe)
    metrics = dict(metrics or {})
    data_info = _dataset(dataset or metrics.get('dataset'), recipe_dict)
    dataset = data_info.name if data_info is not None else None
    split = split or metrics.get('split')
    values = scalar_metrics(metrics)
    if values and not (dataset and split):
        raise ValueError(
            f'metrics need the data set and split they were measured on (got dataset={dataset!r}, '
            f'split={split!r}): pass dataset=... and split=... (--dataset/--split)'
        )
    heatmaps_path = Path(heatmaps) if heatmaps is not None else None
    if heatmaps_path is not None:
        if not heatmaps_path.is_file():
            raise FileNotFoundError(f'heatmaps picture not found: {heatmaps_path}')
        with heatmaps_path.open('rb') as f:
            if f.read(8) != _PNG_MAGIC:
                raise ValueError(f'heatmaps picture {heatmaps_path} is not a PNG file')
    cfg = getattr(model, 'pretrained_cfg', {})
    input_size = tuple(
        _data_config(recipe_dict, data_config).get('input_size') or cfg.get('input_size') or (3, 224, 224)
    )
    license = license or cfg.get('license') or 'apache-2.0'

    if folder.is_dir() and any(folder.iterdir()) and not overwrite:  # checked again when moving into place
        raise FileExistsError(
            f'{folder} exists and is not empty; pass overwrite=True (--overwrite) to replace it'
        )
    spec = describe_model(model)  # last: it rebuilds the model to check the description
    _check_canonical_repo(repo_id, spec.architecture, num_classes)
    model_name = model_name or (repo_id.split('/')[-1] if repo_id else spec.architecture)
    tag = model_name.split('.', 1)[1] if '.' in model_name else None

    folder.parent.mkdir(parents=True, exist_ok=True)
    built = Path(tempfile.mkdtemp(prefix=f'.{folder.name}.tmp-', dir=folder.parent))
    try:
        # Own CPU copies: safetensors refuses tensors that share storage (views, tied weights).
        state = {k: v.detach().to('cpu', copy=True).contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, str(built / WEIGHTS_NAME), metadata={'format': 'pt'})

        config_path = built / CONFIG_NAME
        pretrained_overrides = {
            'hf_hub_filename': WEIGHTS_NAME,  # hf-hub loads read safetensors only, never a pickle
            'license': license,
            'tag': tag,
            'paper_name': ADL_PAPER,
            'paper_ids': ADL_PAPER_ID,
            'origin_url': f'https://hf-p-cfw.fyan.top/{repo_id}' if repo_id else None,
        }
        model_config: dict[str, Any] = {'pretrained_cfg': pretrained_overrides}
        if labels:
            model_config['label_names'] = labels
        save_config_for_hf(
            model,
            str(config_path),
            model_config=model_config,
            model_args=spec.model_args,
            data_config=_data_config(recipe_dict, data_config),
        )
        config = json.loads(config_path.read_text())
        config['architecture'] = spec.architecture
        # Exactly the verified args (timm would also drop every arg ending in '_drop_rate').
        config['model_args'] = spec.model_args
        config['pretrained_cfg'] = {k: v for k, v in config['pretrained_cfg'].items() if v is not None}
        config['timm_adl'] = {
            'version': __version__,
            'base_architecture': spec.base_architecture,
            'adl_points': spec.adl_points,
            'dataset': dataset,
            'split': split,
            'recipe': RECIPE_NAME if recipe_text is not None else None,
        }
        config_path.write_text(json.dumps(config, indent=2) + '\n', encoding='utf-8')

        if recipe_text is not None:
            (built / RECIPE_NAME).write_text(recipe_text, encoding='utf-8')
        if metrics:
            record = {'dataset': dataset, 'split': split, 'cam_method': metrics.get('cam_method'), **values}
            (built / METRICS_NAME).write_text(json.dumps(record, indent=2) + '\n', encoding='utf-8')
        if heatmaps_path is not None:
            shutil.copyfile(heatmaps_path, built / HEATMAPS_NAME)
        card = render_card(
            model_name=model_name,
            repo_id=repo_id,
            architecture=spec.architecture,
            base_architecture=spec.base_architecture,
            adl_points=spec.adl_points,
            num_classes=num_classes,
            num_params=sum(p.numel() for p in model.parameters()),
            input_size=input_size,
            metrics=values,
            dataset=dataset,
            split=split,
            recipe_file=RECIPE_NAME if recipe_text is not None else None,
            recipe_source=recipe_source,
            heatmaps_file=HEATMAPS_NAME if heatmaps_path is not None else None,
            license=license,
            description=description,
            cam_method=metrics.get('cam_method'),
            dataset_terms=(data_info.terms or None) if data_info is not None else None,
            dataset_url=data_info.url if data_info is not None else None,
        )
        (built / README_NAME).write_text(card, encoding='utf-8')
        os.chmod(built, 0o755)  # mkdtemp makes it 0700
        _move_into_place(built, folder, overwrite)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return folder


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    metrics: Mapping[str, Any] | None = None,
    recipe: Any = None,
    private: bool = False,
    revision: str | None = None,
    *,
    commit_message: str | None = None,
    create_pr: bool = False,
    token: str | None = None,
    **kwargs: Any,
) -> CommitInfo:
    """``save_pretrained`` into a temporary folder, then create the repo (if needed) and upload it in one commit.

    The folder is complete before anything is sent, so a model that cannot be described fails without
    touching the Hub. ``revision`` is a branch (created from main if missing). Unlike timm's
    ``push_to_hf_hub``, the model card is always replaced: it carries this checkpoint's metrics.
    ``kwargs`` go to ``save_pretrained`` (``dataset``, ``split``, ``heatmaps``, ``label_names``, ...).
    Returns the ``CommitInfo``; authentication is huggingface_hub's (``hf auth login`` or ``HF_TOKEN``).
    """
    validate_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix='timm-adl-push-') as tmp:
        folder = save_pretrained(model, Path(tmp) / 'model', metrics, recipe, repo_id=repo_id, **kwargs)
        api = HfApi(token=token, library_name='timm-adl', library_version=__version__)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            revision=revision,
            commit_message=commit_message or f'Add {repo_id.split("/")[-1]} (timm-adl {__version__})',
            create_pr=create_pr,
        )
