"""Shared pieces of the paper-backbone builders: pretrained cfgs taken from timm's own, the checkpoint
filter, and the one place where ADL is put into a baseline.

Not a model module (it registers nothing), so its name never shows up in ``timm.list_modules()``.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from timm.models import build_model_with_cfg, get_pretrained_cfg
from torch import nn

from ..surgery import insert

__all__ = [
    'AdlAfter',
    'base_cfg',
    'build_wsol_model',
    'set_feature_reduction',
    'set_stride_one',
    'shared_weights_filter',
]

# What `adl_after` accepts: point names, or point name -> per-point ADL kwargs (as `timm_adl.insert`).
AdlAfter = Sequence[str] | Mapping[str, Mapping[str, Any]]

# Fields of the base checkpoint's cfg that describe how its weights expect images: copied as they are, so
# fine-tuning from them preprocesses exactly as the checkpoint was trained. test_input_size/test_crop_pct
# are not copied: WSOL evaluates at the training size (resize to 224x224, no crop).
_DATA_FIELDS = ('input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std', 'license')

PAPER_NAME = 'Attention-based Dropout Layer for Weakly Supervised Object Localization'


def base_cfg(base: str, **overrides: Any) -> dict[str, Any]:
    """A pretrained cfg whose weights are timm's checkpoint ``base`` ('arch.tag').

    The full ``hf_hub_id`` of the base checkpoint is used (never the bare 'timm/' that timm completes with
    the *current* architecture's name), so ``pretrained=True`` downloads the base model's ImageNet weights.
    """
    src = get_pretrained_cfg(base)
    if src is None or not src.hf_hub_id or src.hf_hub_id == 'timm/':
        raise ValueError(f'timm checkpoint {base!r} has no full hf_hub_id to derive a cfg from')
    cfg = {name: getattr(src, name) for name in _DATA_FIELDS}
    cfg.update(
        hf_hub_id=src.hf_hub_id,
        num_classes=src.num_classes,
        first_conv=src.first_conv,
        paper_name=PAPER_NAME,
        notes=(f'ImageNet-1k initialisation: the weights of timm {base}.',),
    )
    cfg.update(overrides)
    return cfg


def shared_weights_filter(
    drop: Sequence[str] = (), new: Sequence[str] = ()
) -> Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]:
    """Build a timm ``pretrained_filter_fn`` that adapts a base timm checkpoint to a WSOL variant.

    ``drop``: key prefixes of the base checkpoint that the WSOL model does not have (or has with another
    shape), removed. ``new``: key prefixes of layers the base does not have, filled with the model's own fresh
    initialisation. Everything else must match key for key, so timm's strict load still catches any
    backbone tensor that would fail to land.
    """
    drop, new = tuple(drop), tuple(new)

    def _filter(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
        # Only tensors that do not fit the model are dropped / refilled: a checkpoint of the model itself
        # (WSOL checkpoint tag, hf-hub:, local-dir:, file=) loads as it is, trained conv6/SPG/fc included.
        own = model.state_dict()

        def fits(k: str) -> bool:
            return k in own and state_dict[k].shape == own[k].shape

        out = (
            {k: v for k, v in state_dict.items() if fits(k) or not k.startswith(drop)}
            if drop
            else dict(state_dict)
        )
        if new:
            out.update(
                {k: v for k, v in own.items() if k.startswith(new) and not (k in state_dict and fits(k))}
            )
        return out

    return _filter


def set_feature_reduction(model: nn.Module, module: str, reduction: int) -> None:
    """Correct ``feature_info`` after a stride change, so feature extractors report the real stride."""
    for info in model.feature_info:
        if info['module'] == module:
            info['reduction'] = reduction
            return
    raise ValueError(f'no feature_info entry for module {module!r}')


def set_stride_one(model: nn.Module, convs: tuple[str, ...]) -> None:
    """Set the named stride-2 convs to stride 1, refusing anything that is not the expected stride 2."""
    for name in convs:
        conv = model.get_submodule(name)
        if not isinstance(conv, nn.Conv2d) or tuple(conv.stride) != (2, 2):
            raise ValueError(f'expected a stride-2 nn.Conv2d at {name!r}, got {conv!r}')
        conv.stride = (1, 1)


def _resolve_after(adl_after: AdlAfter | None, default: Sequence[str]) -> list[str] | dict[str, dict]:
    if adl_after is None:
        return list(default)
    if isinstance(adl_after, str):  # a lone name is a list of one, not a list of its characters
        return [adl_after]
    if isinstance(adl_after, Mapping):
        return {str(k): dict(v or {}) for k, v in adl_after.items()}
    return [str(a) for a in adl_after]


def build_wsol_model(
    model_fn: Callable[..., nn.Module],
    variant: str,
    pretrained: bool,
    *,
    adl_after: AdlAfter | None = None,
    adl_default_after: Sequence[str] | None = None,
    adl_drop_rate: float = 0.75,
    adl_gamma: float = 0.9,
    **kwargs: Any,
) -> nn.Module:
    """Build a baseline (``adl_default_after is None``) or its ADL twin through ``build_model_with_cfg``.

    ADL goes in inside the model constructor handed to timm's builder, so timm then sets the pretrained
    cfg, loads the ImageNet weights (ADL adds no keys) and wraps ``features_only`` on the final model.
    """
    if adl_default_after is None:
        return build_model_with_cfg(model_fn, variant, pretrained, **kwargs)

    after = _resolve_after(adl_after, adl_default_after)

    def _model_with_adl(**model_kwargs: Any) -> nn.Module:
        return insert(model_fn(**model_kwargs), after=after, drop_rate=adl_drop_rate, gamma=adl_gamma)

    return build_model_with_cfg(_model_with_adl, variant, pretrained, **kwargs)
