"""scripts/setup.sh on bad machines: one clear sentence, never a venv that looks ready."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO


def _copy_of_repo(tmp_path: Path) -> Path:
    """The scripts and package files in a throwaway folder, so the real .venv is never touched."""
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO, copy, ignore=shutil.ignore_patterns(".venv", ".git", "build", "__pycache__", "*.egg-info", "test")
    )
    return copy


def _run(copy: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(copy / "scripts" / "setup.sh")], env=env, capture_output=True, text=True, timeout=300
    )


def test_unsupported_python_is_named(tmp_path: Path) -> None:
    copy = _copy_of_repo(tmp_path)
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\necho "3.9"\n')
    fake.chmod(0o755)
    result = _run(copy, {**os.environ, "PYTHON": str(fake)})
    assert result.returncode != 0
    assert "Python 3.9 is not supported" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (copy / ".venv").exists()


@pytest.mark.slow
def test_no_network_stops_with_one_sentence_and_no_ready_venv(tmp_path: Path) -> None:
    copy = _copy_of_repo(tmp_path)
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": os.devnull,  # forget the machine's local wheel folders
        "PIP_FIND_LINKS": "",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # nothing listens on the discard port
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "3",
    }
    result = _run(copy, env)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("evo1 setup: pip could not fetch") and "no network to the Python package index" in last
    assert not (copy / ".venv" / ".evo1-ready").exists()
    # Every later command runs setup first, which again refuses rather than trusting the half-built venv.
    again = _run(copy, env)
    assert again.returncode != 0 and not (copy / ".venv" / ".evo1-ready").exists()
