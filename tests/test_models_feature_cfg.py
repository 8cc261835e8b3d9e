"""A model built with ``out_indices`` must not change the feature levels of the next one built without."""

import pytest
import timm

import timm_adl  # noqa: F401  (registers the models)


@pytest.mark.parametrize('name', ['mobilenetv1_wsol', 'mobilenetv1_adl', 'vgg16_gap'])
def test_out_indices_do_not_leak_into_the_next_model(name):
    default = len(timm.create_model(name, features_only=True).feature_info.channels())
    timm.create_model(name, features_only=True, out_indices=(3, 4))
    again = timm.create_model(name, features_only=True)
    assert len(again.feature_info.channels()) == default >= 3
