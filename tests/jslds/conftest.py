"""Shared fixtures of the jslds tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small matrices: one thread is fastest, and much faster than two on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
