"""Re-export of ``timm_adl.models._checkpoints``, where the table of published checkpoints now lives.

The table sits beside the model definitions (as timm keeps ``default_cfgs`` in each model file), so
``models/`` no longer imports ``hub/``. This module keeps ``timm_adl.hub.checkpoints`` imports working.
"""

from ..models._checkpoints import (  # noqa: F401  (re-exports)
    ADL_PAPER,
    ADL_PAPER_ID,
    HUB_NOT_FOUND,
    HUB_ORG,
    PUBLISHED_CHECKPOINTS,
    WEIGHTS_NAME,
    WSOL_CHECKPOINTS,
    CheckpointNotPublishedError,
    CorruptCheckpointError,
    WsolCheckpoint,
    checkpoint_cfg,
    corrupt_message,
    explain_hub_errors,
    not_published_message,
    wsol_pretrained_cfgs,
)

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
