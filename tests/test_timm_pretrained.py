"""``timm.list_pretrained()`` lists only the timm-adl weights that can be downloaded today; an unpublished
paper checkpoint stays a registered tag whose weights raise CheckpointNotPublishedError (issue #11)."""

import dataclasses

import pytest
import timm

import timm_adl
from timm_adl import hub
from timm_adl.hub import checkpoints

ADL_MODELS = sorted(timm_adl.models.BASELINES)
PAPER_MODELS = sorted([*ADL_MODELS, *timm_adl.models.BASELINES.values()])


def _downloadable_repos() -> set[str]:
    """Hub repos that exist: timm's own listed checkpoints, and the WSOL ones declared published."""
    timm_repos = {
        timm.models.get_pretrained_cfg(name).hf_hub_id
        for name in timm.list_pretrained()
        if name.split('.')[0] not in PAPER_MODELS
    }
    return timm_repos | {c.repo_id for c in hub.WSOL_CHECKPOINTS.values() if c.published}


def test_list_pretrained_adl_is_the_imagenet_initialisations():
    assert timm.list_pretrained('*adl*') == [f'{name}.in1k_init' for name in ADL_MODELS]


def test_every_listed_weight_has_a_downloadable_source():
    listed = [name for name in timm.list_pretrained() if name.split('.')[0] in PAPER_MODELS]
    assert len(listed) == len(PAPER_MODELS)  # one per model today: its ImageNet initialisation
    repos = _downloadable_repos()
    for name in listed:
        cfg = timm.models.get_pretrained_cfg(name)
        assert cfg.hf_hub_id in repos, f'{name} points at {cfg.hf_hub_id}, which cannot be downloaded'


@pytest.mark.parametrize('name', sorted(n for n, c in hub.WSOL_CHECKPOINTS.items() if not c.published))
def test_unpublished_tag_is_registered_but_not_listed(name):
    arch = name.split('.')[0]
    assert name in timm.list_models(arch, include_tags=True)
    assert name not in timm.list_pretrained(arch)
    cfg = timm.models.get_pretrained_cfg(name)
    assert not cfg.has_weights and cfg.num_classes == hub.WSOL_CHECKPOINTS[name].num_classes


def test_unpublished_tag_by_name_raises_before_any_download(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError('an unpublished checkpoint must not be looked up on the Hub')

    monkeypatch.setattr('timm.models._builder.load_pretrained', no_network)
    with pytest.raises(hub.CheckpointNotPublishedError, match=r"'mobilenetv1_adl\.cub'.*not published yet"):
        timm.create_model('mobilenetv1_adl.cub', pretrained=True)
    model = timm.create_model('mobilenetv1_adl.cub')  # the architecture itself builds, with 200 classes
    assert model.num_classes == 200 and model.pretrained_cfg['tag'] == 'cub'


def test_local_copy_of_an_unpublished_checkpoint_still_loads(tmp_path):
    from safetensors.torch import save_file

    model = timm.create_model('mobilenetv1_wsol.cub')
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = timm.create_model(
        'mobilenetv1_wsol.cub', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert all(loaded.state_dict()[k].equal(v) for k, v in model.state_dict().items())


def test_published_checkpoint_gets_its_hub_repo():
    ckpt = dataclasses.replace(hub.WSOL_CHECKPOINTS['resnet50_se_adl.cub'], published=True)
    cfg = checkpoints.checkpoint_cfg(ckpt, {'classifier': 'fc'})
    assert (
        cfg['hf_hub_id'] == 'timm-adl/resnet50_se_adl.cub' and cfg['hf_hub_filename'] == 'model.safetensors'
    )
    assert timm.models.PretrainedCfg(**cfg).has_weights
