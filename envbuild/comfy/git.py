"""ComfyUI and ComfyUI-Manager from git, pinned: `[comfyui] git/ref`, `[manager] git/ref`.

A lock is only reproducible together with the ComfyUI it was made for, so envbuild clones (or
updates) each checkout to the configured ref as a detached HEAD — a tag, a branch as it is now,
or a commit — and reports the commit it resolved to; `resolved_commits` reads them back for the
lock's fingerprint. A checkout with local changes to tracked files is never moved.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from envbuild.comfy.layout import find_manager, uses_pip_manager
from envbuild.core.errors import CommandFailed, EnvbuildError
from envbuild.settings.config import Config, GitSource
from envbuild.settings.gitref import is_remote
from envbuild.settings.pins import read_head

if TYPE_CHECKING:  # git runs only for checkouts that are repositories: a plain folder costs no import
    import subprocess

# Variables that would point git at another repository than the checkout being fetched.
_DROPPED_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX")
_FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GitError(EnvbuildError):
    """git could not clone, update or read a checkout."""

    exit_code = 8


class FetchResult(NamedTuple):
    name: str  # "ComfyUI" or "ComfyUI-Manager"
    path: Path
    url: str
    ref: str
    commit: str
    previous: str | None  # the commit before (None: freshly cloned)
    action: str  # "cloned" | "updated" | "unchanged"


def git_sources(config: Config) -> list[tuple[str, GitSource, Path]]:
    """The checkouts envbuild.toml asks envbuild to fetch, with their target folders."""
    found = []
    if config.comfyui_git is not None and config.comfyui is not None:
        found.append(("ComfyUI", config.comfyui_git, config.comfyui))
    if config.manager_git is not None and config.manager is not None:
        found.append(("ComfyUI-Manager", config.manager_git, config.manager))
    return found


def fetch_all(config: Config, environ: Mapping[str, str], *, stream: bool = False) -> list[FetchResult]:
    return [fetch_source(name, source, path, project_dir=config.project_dir, stream=stream, environ=environ)
            for name, source, path in git_sources(config)]


def fetch_source(name: str, source: GitSource, path: Path, *, project_dir: Path, environ: Mapping[str, str],
                 stream: bool = False) -> FetchResult:
    """Clone `source` into `path` (or update the clone there) and check out its ref, detached."""
    git = _Git(_git_env(environ), stream)
    url = resolve_url(source.url, project_dir)
    if path.exists() and not (path / ".git").exists():
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # an empty folder is where the clone goes
        else:
            raise GitError(f"{path} exists and is not a git checkout, so envbuild cannot fetch {name} into it",
                           hint=f"move it away, or drop the git/ref keys and manage {path} yourself")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        git.run(["clone", "--no-checkout", "--origin", "origin", url, str(path)], f"cloning {name} from {url}",
                loud=True)
        try:
            commit = _resolve(git, path, source.ref, name, url)
            git.run(["-C", str(path), "-c", "advice.detachedHead=false", "checkout", "--detach", commit],
                    f"checking out {name} {source.ref}")
        except GitError:
            import shutil

            shutil.rmtree(path, ignore_errors=True)  # a clone without a checkout would look locally changed
            raise
        return FetchResult(name, path, url, source.ref, commit, None, "cloned")
    _check_origin(git, path, url, name)
    previous = read_head(path)
    if not (_FULL_SHA.fullmatch(source.ref) and _has_commit(git, path, source.ref)):
        git.run(["-C", str(path), "fetch", "--tags", "--force", "--prune", "origin"], f"fetching {name} from {url}",
                loud=True)
    commit = _resolve(git, path, source.ref, name, url)
    if commit == previous:
        return FetchResult(name, path, url, source.ref, commit, previous, "unchanged")
    _refuse_local_changes(git, path, name)
    git.run(["-C", str(path), "-c", "advice.detachedHead=false", "checkout", "--detach", commit],
            f"checking out {name} {source.ref}")
    return FetchResult(name, path, url, source.ref, commit, previous, "updated")


def resolved_commits(config: Config) -> dict[str, str]:
    """`{"comfyui": sha, "comfyui-manager": sha}` for the checkouts that are git repositories.

    Only a folder that is itself a repository's top level counts: a ComfyUI copied into the
    deployment's own repository is not "at" the deployment's commit.
    """
    checkouts = {"comfyui": config.comfyui}
    if config.manager_enabled and not uses_pip_manager(config):  # the pip Manager's version is in the lock
        checkouts["comfyui-manager"] = config.manager if config.manager is not None else find_manager(config)
    commits = {}
    for key, path in checkouts.items():
        commit = read_head(path) if path is not None else None
        if commit is not None:
            commits[key] = commit
    return commits


def resolve_url(url: str, project_dir: Path) -> str:
    """A relative local path in envbuild.toml is relative to the file, like every other path there."""
    if is_remote(url) or Path(url).is_absolute():
        return url
    return str((project_dir / url).resolve())


class _Git(NamedTuple):
    env: Mapping[str, str]
    stream: bool

    def run(self, args: list[str], doing: str, *, check: bool = True, loud: bool = False,
            ) -> subprocess.CompletedProcess[str]:
        """`loud`: a clone or fetch, whose progress the user may want to see (with `stream`)."""
        from envbuild.core import runner

        try:
            return runner.run(["git", *args], env=self.env, capture=not (loud and self.stream), check=check)
        except FileNotFoundError:
            raise GitError(f"git is not installed, and is needed for {doing}",
                           hint="install git, or drop the git/ref keys from envbuild.toml") from None
        except CommandFailed as exc:
            raise GitError(f"git failed {doing}:\n  " + "\n  ".join(exc.output_tail.splitlines() or ["(no output)"]),
                           hint="check the URL and ref in envbuild.toml, and that this machine can reach it") from None


def _git_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if k not in _DROPPED_ENV}
    env["GIT_TERMINAL_PROMPT"] = "0"  # a password prompt would hang a CI job; fail instead
    return env


def _resolve(git: _Git, path: Path, ref: str, name: str, url: str,
             hint: str = "check [comfyui] ref / [manager] ref in envbuild.toml") -> str:
    """A tag first (pinned), then a branch as the remote has it now, then a commit."""
    for candidate in (f"refs/tags/{ref}", f"refs/remotes/origin/{ref}", ref):
        proc = git.run(["-C", str(path), "rev-parse", "--verify", "--quiet", "--end-of-options",
                        f"{candidate}^{{commit}}"],
                       "resolving a ref", check=False)
        if proc.returncode == 0:
            return proc.stdout.strip()
    # A commit no branch or tag reaches (a pull request's, say) can still be fetched by name.
    proc = git.run(["-C", str(path), "fetch", "--quiet", "--end-of-options", "origin", ref], "fetching a ref",
                   check=False)
    if proc.returncode == 0:
        fetched = git.run(["-C", str(path), "rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"],
                          "resolving a ref", check=False)
        if fetched.returncode == 0:
            return fetched.stdout.strip()
    raise GitError(f"{name}: ref `{ref}` is not a tag, branch or commit of {url}", hint=hint)


def _has_commit(git: _Git, path: Path, sha: str) -> bool:
    proc = git.run(["-C", str(path), "cat-file", "-e", f"{sha}^{{commit}}"], "looking up a commit", check=False)
    return proc.returncode == 0


def _check_origin(git: _Git, path: Path, url: str, name: str) -> None:
    proc = git.run(["-C", str(path), "remote", "get-url", "origin"], "reading the origin URL", check=False)
    have = proc.stdout.strip() if proc.returncode == 0 else ""
    if _same_repo(have, url):
        return
    raise GitError(f"{path} is a checkout of {have or '(no origin remote)'}, not of {url}",
                   hint=f"point [{'manager' if 'Manager' in name else 'comfyui'}] git at it, or move the folder away")


def _same_repo(a: str, b: str) -> bool:
    def norm(url: str) -> str:
        return url.strip().rstrip("/").removesuffix(".git")
    return norm(a) == norm(b)


def _refuse_local_changes(git: _Git, path: Path, name: str) -> None:
    proc = git.run(["-C", str(path), "status", "--porcelain", "--untracked-files=no"], "reading local changes")
    changed = [line[3:] for line in proc.stdout.splitlines() if line.strip()]
    if changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise GitError(f"{name} at {path} has local changes ({listed}); envbuild does not move a checkout over them",
                       hint="commit or stash them, or drop the git/ref keys and manage the checkout yourself")
