"""timm-adl: the Attention-based Dropout Layer (ADL) for timm, and a toolkit for weakly supervised
object localization (WSOL).

``import timm_adl`` registers the paper backbones (``*_adl`` and their baselines) and the generic
``adl_inserted`` architecture in timm's registry: timm has no plugin discovery, so ``timm.create_model``
(``hf-hub:``/``local-dir:`` names included) knows them only after this import.
"""

from . import cam, data, evaluation, hub, metrics, models, train, viz
from .adl import ADL, adl_maps
from .cam import CamResult, cam_geometry, compute_cams
from .evaluation import evaluate
from .hub import load
from .models import BASELINES
from .points import InsertionPoint, insertion_points
from .surgery import InsertedLayer, adl_points, insert, inserted_points, remove
from .version import __version__

__all__ = [
    'ADL',
    'BASELINES',
    'CamResult',
    'InsertedLayer',
    'InsertionPoint',
    '__version__',
    'adl_maps',
    'adl_points',
    'cam',
    'cam_geometry',
    'compute_cams',
    'data',
    'evaluate',
    'evaluation',
    'hub',
    'insert',
    'inserted_points',
    'insertion_points',
    'load',
    'metrics',
    'models',
    'remove',
    'train',
    'viz',
]
