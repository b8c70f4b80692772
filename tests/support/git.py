"""Git for tests, isolated from the machine's configuration (loaded by ``pytest_plugins`` in tests/conftest.py).

* ``GIT_ENV``: a fixed author and committer, no global or system git configuration (a developer's ``~/.gitconfig``
  with signing, hooks or another default branch must not change what the tests see);
* ``git(repo, *args)``: run ``git -C repo ARGS`` in that environment, fail on a non-zero exit, return stdout stripped;
* ``commit_all(repo, message)``: ``git init -b main`` if *repo* is not a repository yet, commit every file, return
  the commit's hash;
* fixture ``git_repo``: an empty repository at ``tmp_path / "repo"`` on branch ``main``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}, check=True)
    return proc.stdout.strip()


def init(repo: Path) -> Path:
    """``git init -b main`` (the directory is made if missing)."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


def commit_all(repo: Path, message: str = "snapshot") -> str:
    if not (repo / ".git").exists():
        init(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """An empty git repository at ``tmp_path / "repo"``, branch ``main``: write files, then ``commit_all``."""
    return init(tmp_path / "repo")
