"""Shared fixtures: a small generated FakeAVCeleb-layout dataset and a store made from it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("PYTHONPATH", str(REPO))


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """A real mini FakeAVCeleb v1.2 tree (5 identities, 28 rows incl. broken ones)."""
    from src.datasets.demo import make_demo_dataset

    root = tmp_path_factory.mktemp("raw") / "FakeAVCeleb_v1.2"
    make_demo_dataset(root, identities_per_group=1, seed=0, include_broken=True)
    return root


@pytest.fixture(scope="session")
def processed_root(demo_root, tmp_path_factory) -> Path:
    """The demo dataset preprocessed into LMDB with the default config (serial executor)."""
    from src.config import load_config
    from src.preprocessing.runner import run_preprocessing

    out = tmp_path_factory.mktemp("processed")
    config = load_config(
        REPO / "configs" / "preprocessing.yaml",
        {"dataset": {"input_dir": str(demo_root)}, "output": {"dir": str(out)}, "processing": {"executor": "serial"}},
    )
    run_preprocessing(config)
    return out / "FakeAVCeleb_v1.2"


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300):
    """Run a repo script with the test interpreter; returns the CompletedProcess."""
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
