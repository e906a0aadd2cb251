"""Shared pytest fixtures (generic; other test modules may add fixtures at the end of this file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import mlflow_server

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mlflow_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real ``mlflow server`` (SQLite backend, proxied artifacts) shared by the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts") as url:
        yield url


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """``test-output/`` at the repository root (git-ignored): screenshots and other evidence."""
    path = REPO_ROOT / "test-output"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in ``tmp_path`` with no MLFLOW_TRACKING_URI, so defaults resolve there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path
