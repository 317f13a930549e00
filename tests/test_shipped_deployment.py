"""The repository's own deployment (envbuild.toml + deploy/ + locks/) must stay current.

This is the README's main job on a fresh clone: every listed profile must be judged up to date
from the committed files alone, offline and without uv.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.deploy import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_committed_locks_are_current_without_running_uv(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "ENVBUILD_"))}
    env["ENVBUILD_UV"] = str(tmp_path / "no-uv-needed")
    result = run_cli(["lock", "--all"], env=env, cwd=ROOT)
    assert result.returncode == 0, result
    from envbuild.config import load_config

    profiles = load_config(ROOT).profiles
    assert len(profiles) >= 5
    for name in profiles:
        assert f"{name}: up to date" in result.stdout, result
    assert "locked" not in result.stdout


def test_shipped_locks_are_hash_locked_and_from_pypi() -> None:
    for folder in sorted((ROOT / "locks").iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        text = (folder / "uv.lock").read_text(encoding="utf-8")
        assert 'source = { registry = "https://pypi.org/simple" }' in text, folder
        assert "127.0.0.1" not in text and "file://" not in text, folder
        assert text.count('hash = "sha256:') > 200, folder
