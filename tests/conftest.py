"""Fixtures of the whole test-suite; the helpers the tests import are in helpers.py."""

import sys
from pathlib import Path

import pytest
import torch

# tests/ on sys.path, so the test files in its subfolders import helpers.py
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
