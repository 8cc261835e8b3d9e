"""What the model loader returns: the model, the input it expects, and where each setting came from.

A model is only right on inputs prepared as in training, and the settings can come from several places
(flags, the weights' metadata, the run's ``config.yaml``, a Hub ``config.json``, the model's own
pretrained_cfg). ``sources`` names, per setting, the place that won, so commands can say it and reports
can record it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

__all__ = ['SETTINGS', 'SOURCES', 'LoadedModel', 'Source']

# Where a setting came from, in the order the loader looks (the first that has it wins).
Source = Literal[
    'override',  # an argument of load_model (a command's flag)
    'checkpoint metadata',  # the data config `timm-adl train` records in each weights file
    'run config.yaml',  # the recipe of the run folder the weights belong to (or the one given)
    'config.json',  # a save_pretrained / Hub folder's timm config
    'pretrained_cfg',  # the architecture's own timm pretrained_cfg
    'default',  # nothing said anything: the project default
    'none',  # no such setting (e.g. random weights, no label names)
]
SOURCES: tuple[str, ...] = Source.__args__  # type: ignore[attr-defined]
SETTINGS = ('architecture', 'input_size', 'mean', 'std', 'label_names', 'cam_method', 'adl_points')


@dataclass
class LoadedModel:
    """A model in eval mode with the input settings it expects.

    Unpacks as ``model, label_names = ...`` (what ``timm_adl.load`` returned before it carried settings).

    Attributes:
        model: the network, in eval mode.
        label_names: class names (a Hub/save_pretrained config.json records them), or None.
        architecture: the timm model name it was built as.
        input_size: ``(C, H, W)`` to feed it.
        mean, std: input normalisation, R G B.
        cam_method: how its maps are made (the recipe's ``cam_method``, else ``'cam'``).
        adl_points: ``{point: {'drop_rate', 'gamma', 'per_sample'}}`` of its ADL layers (empty: none), plus
            ``'use_drop': False`` / ``'use_importance': False`` where that component is switched off.
        sources: for each name in ``SETTINGS``, the ``Source`` it came from.
        files: for each source that is a file, its path (``{'checkpoint metadata': '.../best.safetensors'}``).
        weights_file: the weights read (a path), or None for random weights.
        run_config: the ``TrainConfig`` of the run the weights belong to, when one was found.
        notes: warnings worth showing a user (a config beside the weights that was ignored, and why).
    """

    model: nn.Module
    label_names: list[str] | None
    architecture: str
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cam_method: str
    adl_points: dict[str, dict[str, Any]]
    sources: dict[str, Source]
    files: dict[str, str] = field(default_factory=dict)
    weights_file: str | None = None
    run_config: Any = None
    notes: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        yield self.model
        yield self.label_names

    @property
    def img_size(self) -> int:
        """The square input side (``input_size[-1]``), as the data transforms take it."""
        return int(self.input_size[-1])

    def describe(self, setting: str) -> str:
        """Where ``setting`` came from, in words: ``'checkpoint metadata (runs/a/best.safetensors)'``."""
        source = self.sources[setting]
        where = self.files.get(source)
        return f'{source} ({where})' if where else source
