"""``timm_adl.load``: a published (or local) checkpoint back as a model, with its label names.

Every file is checked before a model is built: the weights must be ``model.safetensors`` (never a pickle),
whole (the Hub cache names each file by its hash, which is checked), and parseable; a bad file raises
``CorruptCheckpointError`` and no model is returned.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HFValidationError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id
from timm.models import create_model, is_model, list_models
from torch import nn

from ..version import __version__
from .checkpoints import (
    HUB_NOT_FOUND,
    WEIGHTS_NAME,
    WSOL_CHECKPOINTS,
    CheckpointNotPublishedError,
    CorruptCheckpointError,
    corrupt_message,
    not_published_message,
)
from .loaded import LoadedModel
from .weights import read_weights

__all__ = ['LoadedModel', 'PretrainedFolder', 'load', 'open_pretrained', 'verify_weights']


class PretrainedFolder(NamedTuple):
    """A save_pretrained folder (local or from the Hub) opened and checked: the model, its label names, and
    the config.json it was built from (for the loader to report where each setting came from)."""

    model: nn.Module
    label_names: list[str] | None
    config_file: str
    config: dict[str, Any]


_SHA256 = re.compile(r'^[0-9a-f]{64}$')
_GIT_SHA1 = re.compile(r'^[0-9a-f]{40}$')


def _file_hash_matches(path: Path) -> bool | None:
    """Check a Hub-cache file against the blob name it is stored under: the sha256 of an LFS file, the git
    object id (sha1 of ``blob <size>\\0`` + content) of a small one (plain sha1 also accepted, to be safe);
    ``None`` when the file is not a cache blob (a plain folder, or a copied cache)."""
    blob = path.resolve()
    if blob.parent.name != 'blobs':
        return None
    name = blob.name
    if _SHA256.match(name):
        digests = [hashlib.sha256()]
    elif _GIT_SHA1.match(name):
        git = hashlib.sha1(f'blob {blob.stat().st_size}\0'.encode(), usedforsecurity=False)
        digests = [git, hashlib.sha1(usedforsecurity=False)]
    else:
        return None
    with blob.open('rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            for digest in digests:
                digest.update(chunk)
    return any(d.hexdigest() == name for d in digests)


def verify_weights(path: str | os.PathLike, where: str | None = None) -> None:
    """Raise ``CorruptCheckpointError`` unless ``path`` is a whole, parseable safetensors file.

    Reads every tensor (safetensors checks the header and that the data fit the file); a file in the Hub
    cache is also checked against the hash it is stored under, which catches flipped bytes too.
    """
    path = Path(path)
    where = where or str(path)
    if _file_hash_matches(path) is False:
        raise CorruptCheckpointError(
            corrupt_message(where, ValueError('content does not match the hash it is stored under'))
        )
    read_weights(path, where)


def _read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict; a truncated or non-JSON file is a ``CorruptCheckpointError`` naming it."""
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as err:
        raise CorruptCheckpointError(
            f'{path} is not valid JSON ({err.msg}, line {err.lineno}): truncated?'
        ) from None
    except UnicodeDecodeError:
        raise CorruptCheckpointError(f'{path} is not valid JSON (not UTF-8 text)') from None
    if not isinstance(config, dict):
        raise CorruptCheckpointError(f'{path} must hold a JSON object, got {type(config).__name__}')
    return config


def _checked_labels(model: nn.Module, where: str) -> list[str] | None:
    """The label names of config.json, refused when their count differs from the model's classes."""
    labels = model.pretrained_cfg.get('label_names')
    num_classes = getattr(model, 'num_classes', None)
    if labels is not None and num_classes is not None and len(labels) != num_classes:
        raise ValueError(
            f'{where}: config.json has {len(labels)} label_names but the model has {num_classes} classes'
        )
    return labels


def _not_found(name: str, err: Exception) -> Exception:
    """The error for a name that is neither a local folder nor a valid Hub repo id: say what was looked for."""
    looked = f'no local folder {name!r} (with config.json and {WEIGHTS_NAME})'
    if Path(name).is_file():
        return ValueError(
            f'{name} is a file: load takes a folder written by save_pretrained or a Hub repo id'
        )
    if name.startswith(('/', '.', '~')) or name.count('/') > 1:  # a path, not ORG/NAME
        return FileNotFoundError(f'{looked}; it is not a Hub repo id (ORG/NAME) either')
    return ValueError(f'{looked}, and {name!r} is not a Hub repo id of the form ORG/NAME ({err})')


def _check_architecture(config: dict[str, Any], where: str) -> None:
    arch = config.get('architecture')
    if not arch:
        raise ValueError(f'{where}: config.json has no "architecture"; it is not a timm model folder')
    if not is_model(arch):
        close = difflib.get_close_matches(arch, list_models(), n=3)
        hint = f' Closest registered names: {", ".join(close)}.' if close else ''
        raise RuntimeError(
            f'Unknown model ({arch}): {where} needs an architecture that is not registered with timm, although '
            f'timm_adl {__version__} is imported (it registers the paper models and adl_inserted). It may come '
            f'from a newer timm-adl or another timm plugin: install or import that first.{hint}'
        )


def _check_points(model: nn.Module, config: dict[str, Any], where: str, kwargs: dict[str, Any]) -> None:
    from ..surgery import adl_points

    recorded = (config.get('timm_adl') or {}).get('adl_points')
    if any(k.startswith('adl_') for k in kwargs):  # the caller asked for other ADL settings
        return
    if recorded is not None and json.loads(json.dumps(adl_points(model))) != recorded:
        raise RuntimeError(
            f'{where}: the rebuilt model has ADL at {sorted(adl_points(model))} but config.json records '
            f'{sorted(recorded)}; the installed timm/timm-adl builds this architecture differently'
        )


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: Any) -> Path:
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except HUB_NOT_FOUND as err:
        ckpt = next((c for c in WSOL_CHECKPOINTS.values() if c.repo_id == repo_id), None)
        if ckpt is not None:
            raise CheckpointNotPublishedError(not_published_message(ckpt, err)) from err
        at = f' at revision {revision!r}' if revision else ''
        if isinstance(err, RevisionNotFoundError):
            raise FileNotFoundError(f'Hub repo {repo_id} has no revision {revision!r}') from err
        if filename == WEIGHTS_NAME and not isinstance(err, FileNotFoundError):
            raise FileNotFoundError(
                f'Hub repo {repo_id}{at} has no {WEIGHTS_NAME}; timm_adl loads safetensors weights only (no pickle)'
            ) from err
        raise FileNotFoundError(
            f'cannot get {filename} of Hub repo {repo_id}{at}: {type(err).__name__}: {err}'.rstrip()
        ) from err


def _load_local(folder: Path, **kwargs: Any) -> PretrainedFolder:
    config_path, weights = folder / 'config.json', folder / WEIGHTS_NAME
    for path in (config_path, weights):
        if not path.is_file():
            extra = ' (timm_adl loads safetensors weights only, no pickle)' if path == weights else ''
            raise FileNotFoundError(f'{path} not found{extra}')
    config = _read_config(config_path)
    _check_architecture(config, str(folder))
    verify_weights(weights)
    model = create_model(f'local-dir:{folder}', pretrained=True, **kwargs)
    _check_points(model, config, str(folder), kwargs)
    return PretrainedFolder(model.eval(), _checked_labels(model, str(folder)), str(config_path), config)


def open_pretrained(
    repo_id: str | os.PathLike,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> PretrainedFolder:
    """The model of a checkpoint pushed by ``push_to_hub`` / ``timm-adl push``, with its config.json.

    Args:
        repo_id: ``'ORG/NAME'`` on the Hub (``'hf-hub:ORG/NAME'`` and ``'ORG/NAME@rev'`` accepted), or a local
            folder written by ``save_pretrained``.
        revision: branch, tag or commit to pin; all files come from that one commit.
        cache_dir: Hugging Face cache to use instead of the default (``HF_HUB_CACHE``).
        kwargs: passed to ``timm.create_model`` (e.g. ``num_classes`` for a new head).

    The same as ``timm.create_model('hf-hub:ORG/NAME@rev', pretrained=True)``, plus checks first: the weights
    are safetensors, whole (hash) and parseable, the architecture is registered, and the rebuilt model has ADL
    where config.json says. Input settings and their provenance are added by ``timm_adl.hub.load_model``, the one
    loader every route goes through (``load`` is it, restricted to Hub ids and save_pretrained folders).
    Raises ``FileNotFoundError`` (``CheckpointNotPublishedError`` for an unpublished
    paper checkpoint) when files cannot be had, ``CorruptCheckpointError`` for bad weights.
    """
    name = os.fspath(repo_id)
    if name.startswith('local-dir:'):
        return _load_local(Path(name[len('local-dir:') :]), **kwargs)
    if not name.startswith('hf-hub:') and Path(name).is_dir():
        return _load_local(Path(name), **kwargs)
    name = name.removeprefix('hf-hub:')
    if '@' in name:
        name, _, at = name.partition('@')
        if revision is not None and revision != at:
            raise ValueError(f'two revisions given: {at!r} in the name and revision={revision!r}')
        revision = at
    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise _not_found(name, err) from None
    config_path = _download(name, 'config.json', revision, cache_dir)
    # Pin the commit the config came from, so the weights and timm's own reads come from the same one.
    commit = config_path.parent.name if config_path.parent.parent.name == 'snapshots' else revision
    weights = _download(name, WEIGHTS_NAME, commit, cache_dir)
    config = _read_config(config_path)
    where = f'Hub repo {name}' + (f'@{commit}' if commit else '')
    _check_architecture(config, where)
    verify_weights(weights, where=f'{WEIGHTS_NAME} of {where} ({weights})')
    model = create_model(
        f'hf-hub:{name}@{commit}' if commit else f'hf-hub:{name}',
        pretrained=True,
        cache_dir=cache_dir,
        **kwargs,
    )
    _check_points(model, config, where, kwargs)
    return PretrainedFolder(model.eval(), _checked_labels(model, where), str(config_path), config)


def load(
    repo_id: str | os.PathLike,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> LoadedModel:
    """Load a checkpoint pushed by ``push_to_hub`` / ``timm-adl push``; model in eval mode.

    Unpacks as ``model, label_names = timm_adl.load(...)``; the result also carries the input settings
    (``input_size``, ``mean``, ``std``, ...) and where each came from (``sources``). ``load_model`` is the
    same loader for run folders and weights files too.

    Args:
        repo_id: ``'ORG/NAME'`` on the Hub (``'hf-hub:ORG/NAME'`` and ``'ORG/NAME@rev'`` accepted), or a local
            folder written by ``save_pretrained``.
        revision: branch, tag or commit to pin; all files come from that one commit.
        cache_dir: Hugging Face cache to use instead of the default (``HF_HUB_CACHE``).
        kwargs: passed to ``timm.create_model`` (e.g. ``num_classes`` for a new head).
    """
    from .loader import load_model

    return load_model(
        repo_id, revision=revision, cache_dir=cache_dir, model_kwargs=kwargs, pretrained_only=True
    )
