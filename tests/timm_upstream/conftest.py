"""Markers of timm's own test suite, for the vendored ``test_timm_models.py`` (timm registers them in its
pyproject.toml; ``timeout`` is pytest-timeout's, which this project does not install, so it is inert)."""

import pytest

TIMM_MARKERS = {
    'base': 'timm: model tests using the basic setup',
    'forward': 'timm: per-model forward tests',
    'backward': 'timm: per-model backward tests',
    'cfg': 'timm: model tests checking the config',
    'torchscript': 'timm: model tests using torchscript',
    'features': 'timm: model tests checking feature extraction',
    'fxforward': 'timm: model tests using torch fx (only forward)',
    'fxbackward': 'timm: model tests using torch fx (only backward)',
    'timeout(seconds)': "pytest-timeout's per-test limit (inert unless pytest-timeout is installed)",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in TIMM_MARKERS.items():
        config.addinivalue_line('markers', f'{name}: {help_text}')


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every vendored model test builds a full-size model (1-6 s each on one core; ~105 s of CPU for the
    file): ``slow``, so ``-m 'not slow'`` skips them locally. CI runs them all."""
    here = config.rootpath / 'tests' / 'timm_upstream'
    for item in items:
        if item.path.name == 'test_timm_models.py' and item.path.parent == here:
            item.add_marker(pytest.mark.slow)
