import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("CA2ST_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"official fixtures folder {FIXTURES} is absent (set CA2ST_FIXTURES to its path)")
    return FIXTURES
