"""Reading a safetensors weights file given by a user: one function, so every command reports a damaged file
the same way (``CorruptCheckpointError`` naming the path) instead of a raw ``SafetensorError`` traceback."""

from __future__ import annotations

import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .checkpoints import CorruptCheckpointError, corrupt_message

__all__ = ['read_weights']


def read_weights(path: str | os.PathLike, where: str | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors file ``path``.

    Raises ``CorruptCheckpointError`` (with ``where``, default the path) when the file is truncated, is not
    safetensors (a pickle renamed ``.safetensors``) or cannot be read; a missing file stays
    ``FileNotFoundError``. Nothing of a bad file is returned.
    """
    try:
        return load_file(os.fspath(path))
    except FileNotFoundError:
        raise
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptCheckpointError(corrupt_message(where or os.fspath(path), err)) from err
