"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """pytest -n 2 already uses both cores; more torch threads per worker only oversubscribe them."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
