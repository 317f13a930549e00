"""Local git repositories for tests: several commits, tags, file:// URLs; no network."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not k.startswith("GIT_")} | GIT_ENV


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=git_env(), capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def commit_files(repo: Path, files: Mapping[str, str], message: str, *, tag: str | None = None) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(textwrap.dedent(text), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    if tag:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD")


def make_repo(path: Path, files: Mapping[str, str], *, tag: str | None = None) -> str:
    """A repository with one commit on `main`; returns the commit."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    return commit_files(path, files, "initial", tag=tag)


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
