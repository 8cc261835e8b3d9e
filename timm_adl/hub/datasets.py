"""Which data set a training run used, and its terms of use: what a model card says under "Training data".

Every CUB and ImageNet recipe reads the same loader format (``data.name: wsol-metadata``), so the format name
says nothing about the data. The data set is read, in this order, from:

1. ``<data.metadata_root>/prepare.json`` (written by ``timm-adl data``: its ``dataset`` field);
2. ``<data.metadata_root>/../synthetic.json`` (the built-in synthetic set: its seed);
3. the folder names of ``data.metadata_root`` and ``data.root``, deepest first (``metadata/CUB``,
   ``CUB_200_2011/images``, ``ILSVRC/metadata``, ``OpenImages/metadata``: wsolevaluation's and
   ``timm-adl data``'s layouts);
4. the loader format itself when it names a data set (``cub``, ``imagenet``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ['KNOWN_DATASETS', 'DatasetInfo', 'dataset_info', 'infer_dataset', 'synthetic_dataset']


@dataclass(frozen=True)
class DatasetInfo:
    """A data set as a model card names it: display name, terms of use, and where those terms are stated."""

    name: str
    terms: str
    url: str | None = None


KNOWN_DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            'CUB-200-2011',
            'Caltech-UCSD Birds-200-2011 (Wah et al., Caltech technical report CNS-TR-2011-001): photographs '
            "collected from Flickr. The authors state no licence; the images remain their photographers' "
            'works and the set is distributed for research, citing the report. Its images overlap ImageNet, '
            'so an ImageNet-pretrained model may have seen some CUB test images.',
            'https://www.vision.caltech.edu/datasets/cub_200_2011/',
        ),
        DatasetInfo(
            'ImageNet-1k',
            'ImageNet (ILSVRC2012) terms of access: non-commercial research and educational use only; the '
            'images belong to their owners.',
            'https://image-net.org/download.php',
        ),
        DatasetInfo(
            'OpenImages30k',
            'Open Images (Google): annotations under CC BY 4.0, images listed as CC BY 2.0 (each image keeps '
            "its own licence); the OpenImages30k splits and masks are clovaai/wsolevaluation's (MIT licence).",
            'https://storage.googleapis.com/openimages/web/index.html',
        ),
    )
}

# Folder or format names (lower case) -> data set.
_ALIASES = {
    'cub': 'CUB-200-2011',
    'cub200': 'CUB-200-2011',
    'cub_200_2011': 'CUB-200-2011',
    'cub-200-2011': 'CUB-200-2011',
    'cubv2': 'CUB-200-2011',
    'imagenet': 'ImageNet-1k',
    'imagenet-1k': 'ImageNet-1k',
    'in1k': 'ImageNet-1k',
    'ilsvrc': 'ImageNet-1k',
    'ilsvrc2012': 'ImageNet-1k',
    'openimages': 'OpenImages30k',
    'openimages30k': 'OpenImages30k',
}


def synthetic_dataset(seed: int, generator_version: Any = None) -> DatasetInfo:
    """The built-in synthetic set (``timm_adl.data.synthetic``) rendered with ``seed``."""
    version = f', generator version {generator_version}' if generator_version is not None else ''
    return DatasetInfo(
        f'timm-adl synthetic WSOL set (seed {seed})',
        f'rendered by timm_adl.data.synthetic with seed {seed}{version}: no third-party images, no terms '
        'beyond the project licence (Apache-2.0).',
    )


def dataset_info(name: str) -> DatasetInfo | None:
    """The known data set ``name`` names (a display name or an alias such as ``cub``), else None."""
    key = name.strip()
    if key in KNOWN_DATASETS:
        return KNOWN_DATASETS[key]
    alias = _ALIASES.get(key.lower())
    return KNOWN_DATASETS[alias] if alias else None


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _from_folders(*paths: str) -> DatasetInfo | None:
    for raw in paths:
        for part in reversed(Path(raw).parts):
            info = dataset_info(part) if part.lower() in _ALIASES else None
            if info is not None:
                return info
    return None


def infer_dataset(data: Mapping[str, Any] | None) -> DatasetInfo | None:
    """The data set of a recipe's ``data`` block (module docstring for the order), or None if unknown."""
    if not isinstance(data, Mapping):
        return None
    metadata_root = str(data.get('metadata_root') or '')
    root = str(data.get('root') or '')
    if metadata_root:
        meta = Path(os.path.expanduser(metadata_root))
        prepared = _read_json(meta / 'prepare.json')
        if prepared and isinstance(prepared.get('dataset'), str):
            return dataset_info(prepared['dataset']) or DatasetInfo(
                prepared['dataset'], "see the data set's own terms of use."
            )
        synthetic = _read_json(meta.parent / 'synthetic.json')
        if synthetic and isinstance(synthetic.get('seed'), int):
            return synthetic_dataset(synthetic['seed'], synthetic.get('generator_version'))
    found = _from_folders(metadata_root, root)
    if found is not None:
        return found
    name = str(data.get('name') or '')
    return dataset_info(name) if name and name != 'wsol-metadata' else None
