"""Hugging Face Hub I/O for timm-adl models: publish a trained WSOL checkpoint with its card, load it back.

- ``save_pretrained(model, folder, metrics, recipe)``: a Hub-ready folder (safetensors, timm config with the
  ADL placement, recipe, model card); ``push_to_hub(model, repo_id, ...)``: the same, uploaded in one commit.
- ``load_model(source)``: the one loader (weights file, run folder, save_pretrained folder or Hub id) giving
  the model, its input settings and where each came from; ``load('ORG/NAME')`` is it for Hub ids:
  ``(model, label_names)``; ``timm.create_model('hf-hub:ORG/NAME', pretrained=True)``
  works too once ``timm_adl`` is imported (it registers the architectures, including ``adl_inserted`` for
  any model ``timm_adl.insert`` made).
- ``WSOL_CHECKPOINTS`` / ``wsol_pretrained_cfgs``: the paper backbones' published checkpoints as timm tags
  (``resnet50_se_adl.cub``); ``explain_hub_errors`` turns a missing one into a message saying how to train it.
"""

from . import adl_inserted  # registers the generic 'adl_inserted' architecture with timm
from .checkpoints import (
    HUB_ORG,
    WSOL_CHECKPOINTS,
    CheckpointNotPublishedError,
    CorruptCheckpointError,
    WsolCheckpoint,
    explain_hub_errors,
    wsol_pretrained_cfgs,
)
from .export import push_to_hub, save_pretrained
from .loaded import LoadedModel
from .loader import load_model, read_checkpoint
from .loading import load, verify_weights
from .spec import ModelSpec, describe_model

__all__ = [
    'HUB_ORG',
    'WSOL_CHECKPOINTS',
    'CheckpointNotPublishedError',
    'CorruptCheckpointError',
    'LoadedModel',
    'ModelSpec',
    'WsolCheckpoint',
    'adl_inserted',
    'describe_model',
    'explain_hub_errors',
    'load',
    'load_model',
    'push_to_hub',
    'read_checkpoint',
    'save_pretrained',
    'verify_weights',
    'wsol_pretrained_cfgs',
]
