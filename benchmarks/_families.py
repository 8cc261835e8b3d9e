"""What the coverage benchmarks share: sizing a timm architecture, and undoing timm's zero-initialised heads.

Imported by ``cam_coverage.py`` and ``insert_coverage.py`` (run as scripts, so this folder is on sys.path).
"""

from __future__ import annotations

import warnings

import timm
import torch


def meta_param_count(name: str) -> int | None:
    """Parameters of ``name`` built on the meta device (no memory, no init); None when it does not build.

    A ``TimeoutError`` (a benchmark's per-family alarm) is not a broken architecture and propagates."""
    try:
        with torch.device('meta'), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            return sum(p.numel() for p in timm.create_model(name).parameters())
    except TimeoutError:
        raise
    except Exception:
        return None


def fewest_params(names: list[str]) -> str | None:
    """The name with the fewest parameters among those that build on the meta device."""
    counted = [(count, name) for name in names if (count := meta_param_count(name)) is not None]
    return min(counted)[1] if counted else None


def randomise_zero_classifiers(model: torch.nn.Module) -> None:
    """Give all-zero Linear / Conv2d weights random values.

    timm zero-initialises some classifiers (Hiera, MLP-Mixer, Sequencer): with random init the output is
    then the bias whatever the features are, so neither a CAM nor an inserted layer could show in it. A
    trained model never has an all-zero classifier.
    """
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, 'weight', None)
            if (
                isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))
                and weight is not None
                and not weight.any()
            ):
                torch.nn.init.normal_(weight, std=0.02)
