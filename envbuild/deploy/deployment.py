"""The deployment a command works on, resolved once at the command line's edge.

envbuild.toml (found from the working folder up), the command's flags and the process environment
become this one value before any work starts: the paths, the profile catalogue, the torch source,
the mirrors with the origin of each setting, the canonical and effective indexes of a profile, the
lock folder, uv. Every module below takes it (or the part it needs) and never reads the
environment or decides any of these again, so `lock`, `sync`, `run`, `verify`, `export`, `check`
and `doctor` cannot disagree about which lock a setting points at.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.core.errors import ConfigError, UsageError
from envbuild.pkgs.lockdir import LockFolder
from envbuild.settings.config import Config
from envbuild.torch.catalogue import ProfileCatalogue, load_catalogue
from envbuild.torch.profile import (
    CANONICAL_PYTORCH_BASE,
    PYTORCH_INDEX_ENV,
    TorchProfile,
    credentials_hint,
    index_url_problem,
    rebase_pytorch_url,
)
from envbuild.uv import names as uv_names
from envbuild.uv.command import DEFAULT_INDEX_ENV

if TYPE_CHECKING:
    from envbuild.core.http.indexclient import IndexClient
    from envbuild.settings.cooldown import Cooldown
    from envbuild.settings.mirrors import Mirrors
    from envbuild.uv.command import Uv

LOCK_TIMEOUT_ENV = "ENVBUILD_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 900.0  # a real ComfyUI lock takes seconds; a cold one on a slow mirror, minutes
CACHE_DIR_ENV = "ENVBUILD_CACHE_DIR"


class Indexes(NamedTuple):
    """Where a profile's lock takes packages from, as the lock must name them."""

    torch: str | None  # the torch family's index (None: the default index, a -pypi or mps profile)
    default: str | None  # a PyPI mirror the lock is made through (None: uv's default index)
    format: str  # "simple", or "flat" for a flat PyTorch mirror


@dataclass(frozen=True)
class Deployment:
    config: Config
    env: Mapping[str, str]  # the process environment, read once; passed to uv, git and ComfyUI
    catalogue: ProfileCatalogue
    mirrors: Mirrors
    pytorch_base: str  # what replaces https://download.pytorch.org/whl in every profile
    torch_source: str | None  # "pypi" / "pytorch-index": the flag, else [lock] torch-source
    lock_timeout: float  # how long a second `lock` of one profile waits for the first

    @property
    def lock_dir(self) -> Path:
        return self.config.lock_dir

    @property
    def default_index(self) -> str | None:
        return uv_default_index(self.env)

    def folder(self, profile: TorchProfile | str) -> LockFolder:
        return LockFolder(self.lock_dir, profile if isinstance(profile, str) else profile.name)

    def display(self, path: Path) -> str:
        return self.config.display(path)

    def committed(self) -> list[str]:
        """Profiles with a lock folder (dot folders are envbuild's staging copies, never a profile)."""
        if not self.lock_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.lock_dir.glob("*/uv.lock") if not p.parent.name.startswith("."))

    def canonical_index(self, profile: TorchProfile) -> str | None:
        return rebase_pytorch_url(profile.index_url, self.pytorch_base) if profile.index_url else None

    def indexes(self, profile: TorchProfile) -> Indexes:
        """The indexes a lock of `profile` names. Only a mirror in mode "lock" changes them: in mode
        "install" locks stay canonical and only the files are fetched elsewhere."""
        canonical = self.canonical_index(profile)
        mirrors = self.mirrors
        if not mirrors.locks_through:
            return Indexes(canonical, None, "simple")
        if canonical is not None and mirrors.pytorch:
            from envbuild.settings.mirrors import mirrored_index

            layout = mirrors.pytorch_layout.replace("tree", "simple")
            return Indexes(mirrored_index(canonical, mirrors, self.pytorch_base), mirrors.pypi, layout)
        return Indexes(canonical, mirrors.pypi, "simple")

    def pytorch_bases(self) -> tuple[str, ...]:
        """Every base a PyTorch index of this deployment can live under (for the audit)."""
        return tuple(dict.fromkeys(b for b in (CANONICAL_PYTORCH_BASE, self.pytorch_base,
                                              self.mirrors.pytorch) if b))

    @functools.cached_property
    def cache_dir(self) -> Path:
        """envbuild's per-user cache (ENVBUILD_CACHE_DIR overrides it): never inside the repository."""
        override = self.env.get(CACHE_DIR_ENV)
        if override:
            return Path(override)
        import platformdirs

        return Path(platformdirs.user_cache_dir("envbuild"))

    @property
    def offline(self) -> bool:
        """uv's own switch (UV_OFFLINE): what envbuild reads from an index itself follows it too."""
        return self.env.get(uv_names.OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")

    def index_client(self, *, offline: bool = False) -> IndexClient:
        """The one client envbuild reads indexes with (pages, wheel metadata), cached per user; offline
        (cache only) when asked or when uv is."""
        from envbuild.core.http.indexclient import HttpCache, IndexClient

        return IndexClient(HttpCache(self.cache_dir / "index"), offline=offline or self.offline)

    @functools.cached_property
    def uv(self) -> Uv:
        """The uv binary, found on first use (a command that never runs uv never looks)."""
        from envbuild.uv.command import get_uv

        return get_uv(self.env)

    def cooldown(self, profile: TorchProfile) -> Cooldown | None:
        """The cooldown this profile's lock holds to: envbuild.toml's, or the default one — except through a
        PyPI mirror, where the default is off: a mirror that lists no upload times (most serve plain HTML
        pages without them) would count every file as new and nothing would lock. Set [lock]
        exclude-newer to have one through a mirror that lists them."""
        config = self.config
        if config.exclude_newer_set or self.indexes(profile).default is None:
            return config.exclude_newer
        return None

    def venv(self, given: Path | None) -> Path:
        """--venv, else `.venv` beside the ComfyUI checkout (inside it, a `uv sync` run in the checkout
        would sync ComfyUI's own dependency-less pyproject and empty it), else ./.venv."""
        if given is not None:  # absolute, links kept: the venv path is a link to a generation
            venv = Path(os.path.abspath(given))
            self._refuse_venv_over_deployment(venv)
            return venv
        if self.config.comfyui is not None:
            return self.config.comfyui.parent / ".venv"
        return self.config.project_dir / ".venv"

    def _refuse_venv_over_deployment(self, venv: Path) -> None:
        """`sync` turns the venv path into a link and moves a venv found there aside: a path that is (or
        holds) the deployment, a checkout, the locks or the base directory would take them with it."""
        config = self.config
        ours = [("the deployment folder", config.project_dir), ("the lock folder", config.lock_dir),
                ("the ComfyUI checkout", config.comfyui), ("the base directory", config.base_directory),
                *(("a custom_nodes folder", d) for d in config.custom_node_dirs())]
        real = Path(os.path.realpath(venv))
        for what, path in ours:
            other = Path(os.path.realpath(path)) if path is not None else None
            inside_locks = what == "the lock folder" and other is not None and real.is_relative_to(other)
            if other is not None and (other.is_relative_to(real) or inside_locks):
                raise UsageError(f"--venv {venv} is, holds or lies in {what} ({path}): envbuild would move it "
                                 "aside or write into it", hint="name a folder of its own, e.g. `--venv .venv`")


def load_deployment(start_dir: Path, env: Mapping[str, str], *, overrides: Mapping[str, object] | None = None,
                    mirror_flags: Mapping[str, object] | None = None, torch_source: str | None = None,
                    exclude_nodes: tuple[str, ...] = (), extra_requirements: tuple[Path, ...] = ()) -> Deployment:
    """Read envbuild.toml (from `start_dir` up), apply the flags, read the environment: once.
    `exclude_nodes`/`extra_requirements` add to the file's lists; `overrides` replace its values."""
    from envbuild.settings.config import load_config
    from envbuild.settings.mirrors import resolve_mirrors

    config = load_config(start_dir)
    if overrides:
        config = config.with_overrides(**overrides)
    config = config._replace(
        exclude_nodes=tuple(dict.fromkeys((*config.exclude_nodes, *exclude_nodes))),
        extra_requirements=tuple(dict.fromkeys((*config.extra_requirements, *extra_requirements))))
    if mirror_flags:
        config = config._replace(mirror_flags=mirror_flags)
    mirrors = resolve_mirrors(config.mirrors, config.source, env, config.mirror_flags)
    return Deployment(
        config=config, env=env, catalogue=load_catalogue(config.profiles_dirs), mirrors=mirrors,
        pytorch_base=pytorch_base(env), torch_source=torch_source or config.torch_source,
        lock_timeout=lock_timeout(env),
    )


def uv_default_index(env: Mapping[str, str]) -> str | None:
    """uv's default index from the environment (UV_DEFAULT_INDEX, else UV_INDEX_URL); None: PyPI."""
    return next((env[key] for key in DEFAULT_INDEX_ENV if env.get(key)), None)


def pytorch_base(env: Mapping[str, str]) -> str:
    """ENVBUILD_PYTORCH_INDEX (a base like https://download.pytorch.org/whl), checked once."""
    base = env.get(PYTORCH_INDEX_ENV)
    if not base:
        return CANONICAL_PYTORCH_BASE
    problem = index_url_problem(base)
    if problem:
        hint = (credentials_hint(None) + ", e.g. UV_INDEX_PYTORCH_CU126_USERNAME and UV_INDEX_PYTORCH_CU126_PASSWORD "
                "for profile cu126's index pytorch-cu126" if "password" in problem
                else "a base URL such as https://download.pytorch.org/whl (with cu126, ... below it)")
        raise ConfigError(PYTORCH_INDEX_ENV, problem, hint=hint)
    return base.rstrip("/")


def lock_timeout(env: Mapping[str, str]) -> float:
    """How long to wait for another envbuild locking the same profile (ENVBUILD_LOCK_TIMEOUT, seconds)."""
    raw = env.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # also refuses NaN
        raise UsageError(f"{LOCK_TIMEOUT_ENV}={raw!r} is not a number of seconds",
                         hint=f"e.g. {LOCK_TIMEOUT_ENV}=600, or unset it (default {DEFAULT_LOCK_TIMEOUT:g} s)")
    return seconds
