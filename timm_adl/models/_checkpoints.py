"""The published WSOL checkpoints of the paper backbones: where they live on the Hub, how to rebuild them,
and the errors that say so when they cannot be had.

Kept free of model code, so the model modules can import it to build their pretrained cfgs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from safetensors import SafetensorError
from timm.models import PretrainedCfg, get_pretrained_cfg

__all__ = [
    'HUB_ORG',
    'PUBLISHED_CHECKPOINTS',
    'WSOL_CHECKPOINTS',
    'CheckpointNotPublishedError',
    'CorruptCheckpointError',
    'WsolCheckpoint',
    'explain_hub_errors',
    'wsol_pretrained_cfgs',
]

# The Hub organisation the paper checkpoints are pushed to: repo ids are '<HUB_ORG>/<arch>.<tag>', timm's style.
HUB_ORG = 'timm-adl'

ADL_PAPER = 'Attention-based Dropout Layer for Weakly Supervised Object Localization'
ADL_PAPER_ID = 'arXiv:1908.10028'
WEIGHTS_NAME = 'model.safetensors'

# The WSOL checkpoints ('arch.tag') whose Hub repos exist, i.e. that can be downloaded today. Only these get a
# weight source (hf_hub_id) in their pretrained cfg, so timm.list_pretrained() lists exactly these; every other
# tag stays registered (create_model('resnet50_se_adl.cub') builds the 200-class model) and asking for its
# weights raises CheckpointNotPublishedError. Add a name here in the release that publishes its repo.
PUBLISHED_CHECKPOINTS: frozenset[str] = frozenset()

# Hub errors that mean "these weights cannot be had": the repo, revision or file does not exist, or the Hub
# cannot be reached and the file is not in the local cache (LocalEntryNotFoundError is an EntryNotFoundError).
HUB_NOT_FOUND = (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError)


@dataclass(frozen=True)
class WsolCheckpoint:
    """One WSOL checkpoint of a paper backbone: ``architecture.tag`` in timm's registry, ``repo_id`` on the Hub."""

    architecture: str
    tag: str
    dataset: str  # display name, as on the model card
    num_classes: int
    recipe: str  # recipe file, relative to the repository root
    published: bool = False  # its Hub repo exists (see PUBLISHED_CHECKPOINTS)

    @property
    def name(self) -> str:
        return f'{self.architecture}.{self.tag}'

    @property
    def repo_id(self) -> str:
        return f'{HUB_ORG}/{self.name}'


# backbone (recipe file stem) -> (CAM baseline architecture, ADL architecture)
_BACKBONES = {
    'vgg16_gap': ('vgg16_gap', 'vgg16_gap_adl'),
    'resnet50_se': ('resnet50_se', 'resnet50_se_adl'),
    'mobilenetv1': ('mobilenetv1_wsol', 'mobilenetv1_adl'),
    'inception_v3': ('inception_v3_wsol', 'inception_v3_adl'),
}
# tag -> (data set shown on the card, classes, recipe folder)
_DATASETS = {
    'cub': ('CUB-200-2011', 200, 'recipes/cub'),
    'in1k': ('ImageNet-1k', 1000, 'recipes/imagenet'),
}


def _all_checkpoints() -> dict[str, WsolCheckpoint]:
    out = {}
    for backbone, (cam_arch, adl_arch) in _BACKBONES.items():
        for method, arch in (('cam', cam_arch), ('adl', adl_arch)):
            for tag, (dataset, num_classes, folder) in _DATASETS.items():
                recipe = f'{folder}/{backbone}_{method}.yaml'
                published = f'{arch}.{tag}' in PUBLISHED_CHECKPOINTS
                ckpt = WsolCheckpoint(arch, tag, dataset, num_classes, recipe, published)
                out[ckpt.name] = ckpt
    return out


# 'arch.tag' -> checkpoint, for the 4 backbones x {CAM baseline, ADL} x {CUB, ImageNet-1k}.
WSOL_CHECKPOINTS: dict[str, WsolCheckpoint] = _all_checkpoints()

# Fields a WSOL checkpoint's cfg takes from the architecture's own cfg (how its weights see images and where
# its stem and classifier are); everything about the weights themselves is set here.
_INHERITED = ('interpolation', 'mean', 'std', 'first_conv', 'classifier', 'license', 'description')


def wsol_pretrained_cfgs(
    architecture: str, base: Mapping[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Pretrained cfgs (``'arch.tag' -> dict``) of ``architecture``'s WSOL checkpoints, for ``generate_default_cfgs``.

    ``base`` is the architecture's own cfg (its ImageNet-initialisation entry): its preprocessing, ``first_conv``
    and ``classifier`` are kept. Put these entries *after* the default tag, so ``pretrained=True`` without a
    tag keeps meaning the initialisation weights. The cfgs describe the WSOL evaluation transform: resize to
    224x224, no crop (``crop_mode='squash'``).
    """
    cfgs = {
        name: checkpoint_cfg(ckpt, base)
        for name, ckpt in WSOL_CHECKPOINTS.items()
        if ckpt.architecture == architecture
    }
    if not cfgs:
        raise ValueError(
            f'no WSOL checkpoints are defined for {architecture!r}; '
            f'known architectures: {sorted({c.architecture for c in WSOL_CHECKPOINTS.values()})}'
        )
    return cfgs


def checkpoint_cfg(ckpt: WsolCheckpoint, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pretrained cfg of one WSOL checkpoint: its Hub repo (safetensors only) if it is published, else
    no weight source at all, which is what keeps it out of ``timm.list_pretrained()`` (timm lists a tag
    when its cfg has ``url``, ``file`` or ``hf_hub_id``)."""
    base = dict(base or {})
    cfg = {k: base[k] for k in _INHERITED if base.get(k) is not None}
    if tuple(base.get('input_size', (3, 224, 224)))[1:] == (224, 224) and base.get('pool_size'):
        cfg['pool_size'] = base['pool_size']
    if ckpt.published:
        cfg.update(hf_hub_id=ckpt.repo_id, hf_hub_filename=WEIGHTS_NAME)
    cfg.update(
        num_classes=ckpt.num_classes,
        input_size=(3, 224, 224),
        crop_pct=1.0,
        crop_mode='squash',
        paper_name=ADL_PAPER,
        paper_ids=ADL_PAPER_ID,
        notes=(f'WSOL checkpoint trained on {ckpt.dataset} with `timm-adl train {ckpt.recipe}`.',),
    )
    return cfg


class CheckpointNotPublishedError(FileNotFoundError):
    """A WSOL checkpoint tag whose Hub repo does not exist yet (or cannot be reached and is not cached)."""


class CorruptCheckpointError(ValueError):
    """A weights file that is truncated, corrupted or not safetensors: nothing was loaded from it."""


def not_published_message(ckpt: WsolCheckpoint, err: BaseException | None = None) -> str:
    if err is None:  # asked for by name: the registry knows it is not published, nothing was downloaded
        why = 'is not published yet (no timm-adl release lists it as downloadable)'
    elif isinstance(err, (RepositoryNotFoundError, RevisionNotFoundError)) or not isinstance(
        err, FileNotFoundError
    ):
        why = f'is not published on the Hugging Face Hub yet ({type(err).__name__})'
    else:  # LocalEntryNotFoundError: offline, or the Hub could not be reached
        why = (
            'could not be downloaded and is not in the local Hugging Face cache: it is not published yet, '
            f'or the Hub cannot be reached ({type(err).__name__})'
        )
    return (
        f'The {ckpt.dataset} checkpoint {ckpt.name!r} (Hub repo {ckpt.repo_id}) {why}. '
        f'Train it from its recipe with `timm-adl train {ckpt.recipe}` and publish it with '
        f'`timm-adl push <run dir> --repo-id {ckpt.repo_id}`; or create the model with pretrained=False.'
    )


def corrupt_message(where: str, err: BaseException) -> str:
    return (
        f'{where} is corrupted or truncated ({type(err).__name__}: {err}); no weights were loaded. '
        'Delete it and download it again (for a Hub checkpoint: remove its models--<org>--<name> folder '
        f'from the Hugging Face cache, {hf_constants.HF_HUB_CACHE}).'
    )


def _requested_cfg(architecture: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The pretrained cfg an entrypoint call resolves to (tag, dict or default), as timm's builder picks it."""
    cfg = kwargs.get('pretrained_cfg')
    if isinstance(cfg, PretrainedCfg):
        out = cfg.to_dict()
    elif isinstance(cfg, Mapping):
        out = dict(cfg)
    else:
        try:
            found = get_pretrained_cfg(f'{architecture}.{cfg}' if cfg else architecture)
        except RuntimeError:  # an invalid tag: timm's own error follows
            found = None
        out = found.to_dict() if found is not None else {}
    out.update(kwargs.get('pretrained_cfg_overlay') or {})
    return out


_SOURCE_FIELDS = ('url', 'file', 'hf_hub_id', 'state_dict')


def _unpublished_request(architecture: str, kwargs: Mapping[str, Any]) -> WsolCheckpoint | None:
    """The unpublished WSOL checkpoint a ``pretrained=True`` call names, if it names one and gives no other
    weight source (an overlay ``file=`` of a local copy still loads)."""
    cfg = _requested_cfg(architecture, kwargs)
    ckpt = WSOL_CHECKPOINTS.get(f'{cfg.get("architecture")}.{cfg.get("tag")}')
    if ckpt is None or ckpt.published or any(cfg.get(k) for k in _SOURCE_FIELDS):
        return None
    return ckpt


def _weights_location(cfg: Mapping[str, Any]) -> str:
    if cfg.get('source') == 'local-dir' or cfg.get('file'):
        return f'the weights file under {cfg.get("file")}'
    if cfg.get('hf_hub_id'):
        return f'the cached {cfg.get("hf_hub_filename") or WEIGHTS_NAME} of Hub repo {cfg["hf_hub_id"]}'
    return 'the pretrained weights file'


F = TypeVar('F', bound=Callable[..., Any])


def explain_hub_errors(fn: F) -> F:
    """Wrap a model entrypoint so weight-loading failures come out as clear errors.

    - A WSOL checkpoint tag (``WSOL_CHECKPOINTS``) that is not published, or whose Hub repo cannot be had,
      raises ``CheckpointNotPublishedError`` saying how to train it from its recipe, instead of timm's
      "No pretrained weights exist" or a raw Hub error.
    - A weights file safetensors cannot parse (truncated, corrupted) raises ``CorruptCheckpointError``.

    Apply it under ``@register_model`` (``functools.wraps`` keeps the name timm registers and the signature).
    """

    @functools.wraps(fn)
    def entrypoint(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get('pretrained', args[0] if args else False):
            unpublished = _unpublished_request(fn.__name__, kwargs)
            if unpublished is not None:
                raise CheckpointNotPublishedError(not_published_message(unpublished))
        try:
            return fn(*args, **kwargs)
        except HUB_NOT_FOUND as err:
            pretrained = kwargs.get('pretrained', args[0] if args else False)
            repo = str(_requested_cfg(fn.__name__, kwargs).get('hf_hub_id') or '').split('@')[0]
            ckpt = next((c for c in WSOL_CHECKPOINTS.values() if c.repo_id == repo), None)
            if not pretrained or ckpt is None:
                raise
            raise CheckpointNotPublishedError(not_published_message(ckpt, err)) from err
        except SafetensorError as err:
            where = _weights_location(_requested_cfg(fn.__name__, kwargs))
            raise CorruptCheckpointError(f'{fn.__name__}: {corrupt_message(where, err)}') from err

    return entrypoint  # type: ignore[return-value]
