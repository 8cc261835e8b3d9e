"""timm-adl: the Attention-based Dropout Layer (ADL) for timm, and a toolkit for weakly supervised
object localization (WSOL).

``import timm_adl`` registers the paper backbones (``*_adl`` and their baselines) in timm's registry.
"""

from .adl import ADL, adl_maps
from .version import __version__

__all__ = ['ADL', '__version__', 'adl_maps']
