"""``adl_inserted``: the timm architecture of any model ``timm_adl.insert`` made from a registered timm model.

Its model args name the base architecture (and the base's own args), the ADL points with their settings
and any other inserted layers as ``{point: {'layer': class name, 'kwargs': {...}}}``, so a ``config.json``
with ``"architecture": "adl_inserted"`` rebuilds exactly the inserted model, and
``timm.create_model('hf-hub:ORG/NAME', pretrained=True)`` works for it once ``timm_adl`` is imported.
The name does not end in ``_adl``: ``timm.list_models('*_adl')`` lists only the paper's models.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from timm.models import (
    PretrainedCfg,
    build_model_with_cfg,
    get_pretrained_cfg,
    is_model,
    list_models,
    register_model,
)
from timm.models import create_model as timm_create_model
from torch import nn

from .checkpoints import explain_hub_errors

__all__ = ['adl_inserted']

_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'tag', 'architecture')


def _base_cfg(base_architecture: str) -> dict[str, Any]:
    """The base's default cfg minus its weight source: without a source given, there are no weights to load."""
    found = get_pretrained_cfg(base_architecture)
    cfg = found.to_dict() if found is not None else PretrainedCfg().to_dict()
    for key in _SOURCE_KEYS:
        cfg.pop(key, None)
    return cfg


def _check_base(base_architecture: str) -> None:
    if not base_architecture:
        raise ValueError(
            "adl_inserted needs base_architecture='<timm model name>' and adl_points={point: {ADL kwargs}} "
            '(as timm_adl.adl_points returns them)'
        )
    if base_architecture == 'adl_inserted' or not is_model(base_architecture):
        close = difflib.get_close_matches(base_architecture, list_models(), n=3)
        hint = f' (did you mean {", ".join(close)}?)' if close else ''
        raise ValueError(
            f'adl_inserted: base_architecture {base_architecture!r} is not a registered timm model{hint}; '
            'if it comes from another timm plugin, import that plugin first'
        )


def _layer_groups(
    inserted: Mapping[str, Mapping[str, Any]], layers: Mapping[str, type] | None
) -> list[tuple[type, dict[str, dict[str, Any]]]]:
    """``(class, {point: kwargs})`` per recorded layer class, each class resolved without any import."""
    from ..layer_spec import resolve_layer

    groups: dict[str, tuple[type, dict[str, dict[str, Any]]]] = {}
    for point, record in inserted.items():
        if not isinstance(record, Mapping) or not isinstance(record.get('layer'), str):
            raise ValueError(
                f"adl_inserted: inserted_layers[{point!r}] must be {{'layer': <class name>, 'kwargs': {{...}}}}, "
                f'got {record!r}'
            )
        name = record['layer']
        if name not in groups:
            groups[name] = (resolve_layer(name, layers), {})
        groups[name][1][str(point)] = dict(record.get('kwargs') or {})
    return list(groups.values())


@register_model
@explain_hub_errors
def adl_inserted(
    pretrained: bool = False,
    base_architecture: str = '',
    adl_points: Mapping[str, Mapping[str, Any]] | None = None,
    inserted_layers: Mapping[str, Mapping[str, Any]] | None = None,
    layers: Mapping[str, type] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``base_architecture`` built by timm with ``kwargs``, then ADL inserted at ``adl_points`` (point -> kwargs)
    and other layers at ``inserted_layers`` (point -> ``{'layer': name, 'kwargs': {...}}``).

    Layer names resolve only to classes of ``torch.nn``, ``timm.layers`` and ``timm_adl``, or to the classes
    passed in ``layers`` (``{'MyAdapter': MyAdapter}``): a config file never makes us import a module.
    ``pretrained=True`` needs a weight source: ``hf-hub:``/``local-dir:`` names, or
    ``pretrained_cfg_overlay=dict(file=...)``; the base's own pretrained weights are not used.
    """
    from ..surgery import insert  # the package imports this module at import time: avoid a cycle

    _check_base(base_architecture)
    points = {str(name): dict(settings or {}) for name, settings in (adl_points or {}).items()}
    groups = _layer_groups(inserted_layers or {}, layers)
    if kwargs.get('pretrained_cfg') is None or isinstance(kwargs.get('pretrained_cfg'), str):
        if isinstance(kwargs.get('pretrained_cfg'), str):
            raise ValueError(
                f'adl_inserted has no pretrained tags (got {kwargs["pretrained_cfg"]!r}); '
                "load published weights with timm.create_model('hf-hub:ORG/NAME', pretrained=True)"
            )
        kwargs['pretrained_cfg'] = _base_cfg(base_architecture)

    def _build(**model_kwargs: Any) -> nn.Module:
        model = timm_create_model(base_architecture, pretrained=False, **model_kwargs)
        model = insert(model, after=points) if points else model
        for cls, after in groups:
            model = insert(model, after=after, layer=cls)
        return model

    return build_model_with_cfg(_build, 'adl_inserted', pretrained, **kwargs)
