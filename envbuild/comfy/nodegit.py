"""Custom nodes from git at a pinned commit: fetched shallow, in parallel, never over local work.

A node is fetched with `git fetch --depth 1 origin <ref>` (one commit, not its history: twenty
nodes cost seconds, not minutes); a server that refuses a commit by name gets a full fetch instead.
A checkout at another commit than its pin ("moved") or with local changes ("dirty") is named and
left alone unless `force` is given: it may hold the user's work. All git goes through gitsrc's
runner wrapper (`runner.run`).

A node whose code lives in git submodules (ComfyUI_UltimateSDUpscale's `repositories/...`) gets them
checked out at the commits the node's own commit records (`git submodule update --init --recursive`,
after every checkout): without them the folder is empty and the node downloads code at import. A
submodule checked out at another commit is named like a moved node ("submodule Y moved from a to
b"). git refuses submodules over the file protocol (local paths, file://) since 2.38 (CVE-2022-39253:
a hostile repository could copy this machine's files into its checkout); envbuild allows them only
for a node whose own URL is local, which is the user's own setup, never for a node fetched over the
network.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from envbuild.comfy.git import GitError, _Git, _git_env, _resolve, _same_repo, resolve_url
from envbuild.core.text import quoted
from envbuild.settings.config import DEFAULT_REGISTRY
from envbuild.settings.gitref import is_remote, ref_problem
from envbuild.settings.pins import FULL_SHA, NodePin, read_head


class NodeFetch(NamedTuple):
    name: str
    path: Path
    commit: str
    previous: str | None  # None: freshly cloned
    action: str  # "cloned" | "updated" | "unchanged" | "refused" | "failed"
    problem: str = ""  # why refused or failed
    sha256: str = ""  # a registry node's archive hash (to record at its first fetch)


class Resolved(NamedTuple):
    commit: str
    ref: str  # the ref as it should be recorded (the remote's default branch when none was given)


def git_for(environ: Mapping[str, str]) -> _Git:
    return _Git(_git_env(environ), stream=False)


def checkout_ref(git: _Git, folder: Path, url: str, ref: str | None, name: str, *, force: bool = False) -> Resolved:
    """Bring `ref` (None: the remote's default branch) into the repository at `folder` and check it out,
    detached; shallow where the server allows it."""
    recorded = ref or _default_branch(git, folder, name, url)
    problem = ref_problem(recorded)
    if problem:  # a flag's value, or the branch name a server announced: both reach git's argv and the pin
        raise GitError(f"node {name}: ref {quoted(recorded)} {problem}",
                       hint="pass --ref with a tag, a branch or a full commit")
    wanted = ref or "HEAD"
    commit = None
    if FULL_SHA.fullmatch(wanted) and _has(git, folder, wanted):
        commit = wanted
    if commit is None:
        shallow = git.run(["-C", str(folder), "fetch", "--quiet", "--depth", "1", "--no-tags",
                                  "--end-of-options", "origin", wanted],
                          f"fetching {name} {wanted}", check=False)
        if shallow.returncode == 0:
            commit = git.run(["-C", str(folder), "rev-parse", "--verify", "FETCH_HEAD^{commit}"],
                             f"resolving {name} {wanted}").stdout.strip()
    if commit is None:  # a server refusing a commit by name, or a ref only a full fetch finds
        unshallow = ["--unshallow"] if (folder / ".git" / "shallow").exists() else []
        git.run(["-C", str(folder), "fetch", "--quiet", "--tags", "--force", *unshallow, "origin"],
                f"fetching {name} from {url}")
        commit = _resolve(git, folder, wanted, name, url,
                          hint=f"check the node's ref: `envbuild node update {name} --ref REF` (or --ref on "
                               "`node add`)")
    git.run(["-C", str(folder), "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach",
             *(["--force"] if force else []), commit], f"checking out {name} {recorded}")
    update_submodules(git, folder, url, name, force=force)
    return Resolved(commit, recorded)


class Submodule(NamedTuple):
    path: str  # relative to the node's folder (posix; nested ones as parent/child)
    recorded: str  # the commit the checkout's commit records for it
    actual: str | None  # the commit checked out there (None: not checked out)

    @property
    def problem(self) -> str:
        """"" when it is at the recorded commit; else what is wrong, said like a moved node."""
        if self.actual is None:
            return f"submodule {self.path} is not checked out (at {self.recorded[:12]} by its pin)"
        if self.actual != self.recorded:
            return f"submodule {self.path} moved from {self.recorded[:12]} to {self.actual[:12]}"
        return ""


def update_submodules(git: _Git, folder: Path, url: str, name: str, *, force: bool = False) -> None:
    """Check out every submodule (recursively) at the commit the checkout records; nothing without a
    .gitmodules (no process: most nodes have none). `force`: also over a submodule that moved."""
    if not (folder / ".gitmodules").is_file():
        return
    local = not is_remote(url) or url.lower().startswith("file://")
    allow_local = ["-c", "protocol.file.allow=always"] if local else []
    git.run(["-C", str(folder), *allow_local, "submodule", "--quiet", "update", "--init", "--recursive",
             *(["--force"] if force else [])], f"checking out the submodules of {name}")


def submodules(git: _Git, folder: Path, prefix: str = "") -> list[Submodule]:
    """Each submodule of the checkout at `folder` (and theirs), its recorded and its checked-out commit.
    Runs git only in a checkout with a .gitmodules; a checkout git cannot read has none to say."""
    if not (folder / ".gitmodules").is_file():
        return []
    proc = git.run(["-C", str(folder), "ls-tree", "-r", "-z", "HEAD"], "reading the submodules", check=False)
    if proc.returncode != 0:
        return []
    found = []
    for entry in proc.stdout.split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[0] == "160000" and FULL_SHA.fullmatch(parts[2]) and path:
            actual = read_head(folder / path)
            found.append(Submodule(prefix + path, parts[2], actual))
            if actual is not None and actual == parts[2]:
                found.extend(submodules(git, folder / path, f"{prefix}{path}/"))
    return found


def clone_at(git: _Git, folder: Path, url: str, ref: str | None, name: str) -> Resolved:
    """A new checkout of `url` at `ref` in `folder` (which must not exist); removed again on failure."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    git.run(["init", "--quiet", str(folder)], f"creating {folder}")
    try:
        git.run(["-C", str(folder), "remote", "add", "origin", url], f"adding the remote of {name}")
        return checkout_ref(git, folder, url, ref, name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a repository without a checkout would look changed
        raise


def local_changes(git: _Git, folder: Path, *, untracked: bool = False) -> list[str]:
    """Tracked files changed in a checkout; with `untracked`, also files git does not track nor ignore
    (what replacing or removing the folder would delete: a user's own file). Ignored files (caches)
    are never listed."""
    mode = "--untracked-files=normal" if untracked else "--untracked-files=no"
    proc = git.run(["-C", str(folder), "status", "--porcelain", mode], "reading local changes")
    return [line[3:] for line in proc.stdout.splitlines() if line.strip()]


def origin_url(git: _Git, folder: Path) -> str:
    proc = git.run(["-C", str(folder), "remote", "get-url", "origin"], "reading the origin URL", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def fetch_node(pin: NodePin, folder: Path, *, project_dir: Path, environ: Mapping[str, str],
               force: bool = False, registry: str = DEFAULT_REGISTRY) -> NodeFetch:
    """Restore one pinned node at its commit. Never raises for the node's own state: a refusal or a
    git failure is the result, so one bad node does not stop the others."""
    if pin.from_registry:
        return _fetch_from_registry(pin, folder, registry, force)
    git = git_for(environ)
    url = resolve_url(pin.url, project_dir)
    try:
        if not folder.exists():
            return NodeFetch(pin.name, folder, clone_at(git, folder, url, pin.commit, pin.name).commit, None, "cloned")
        previous = read_head(folder)
        if previous is None:
            return NodeFetch(pin.name, folder, "", None, "refused",
                             "exists and is not a git checkout (move it away, or `envbuild node remove` the pin)")
        have = origin_url(git, folder)
        if not _same_repo(have, url):
            return NodeFetch(pin.name, folder, previous, previous, "refused",
                             f"is a checkout of {have or '(no origin)'}, not of {pin.url}")
        subs = submodules(git, folder)
        moved = [sub for sub in subs if sub.actual is not None and sub.actual != sub.recorded]
        # A moved submodule shows as a changed file: it is said as what it is, not as a local change (one
        # with edited files inside, at its commit, stays a local change).
        changed = [path for path in local_changes(git, folder) if path not in {sub.path for sub in moved}]
        if previous == pin.commit and not ((changed or moved) and force):
            if moved:
                return NodeFetch(pin.name, folder, previous, previous, "refused",
                                 f"has {', '.join(sub.problem for sub in moved)}; `envbuild fetch --force` puts it "
                                 "back at the commit its pin records")
            missing = [sub.path for sub in subs if sub.actual is None]
            if missing:  # nothing of the user's can be there: checked out without asking
                update_submodules(git, folder, url, pin.name)
            said = [f"has local changes ({_listed(changed)})"] if changed else []
            said += [f"had submodules not checked out, now at the commits its pin records ({_listed(missing)})"] \
                if missing else []
            return NodeFetch(pin.name, folder, previous, previous, "unchanged", "; ".join(said))
        if not force:
            why = (f"has local changes ({_listed(changed)})" if changed
                   else f"is at {previous[:12]}, not at its pin {pin.commit[:12]}")
            return NodeFetch(pin.name, folder, previous, previous, "refused",
                             why + "; `envbuild fetch --force` puts it back at the pin")
        commit = checkout_ref(git, folder, url, pin.commit, pin.name, force=True).commit
        return NodeFetch(pin.name, folder, commit, previous, "updated")
    except GitError as exc:
        return NodeFetch(pin.name, folder, "", None, "failed", exc.message)


def fetch_nodes(targets: Sequence[tuple[NodePin, Path]], *, project_dir: Path, environ: Mapping[str, str],
                force: bool = False, jobs: int = 8, registry: str = DEFAULT_REGISTRY,
                on_done: Callable[[NodeFetch], None] | None = None) -> list[NodeFetch]:
    """Every pinned node, `jobs` at a time (git waits on the network and disk, not on the CPU)."""
    def one(item: tuple[NodePin, Path]) -> NodeFetch:
        result = fetch_node(item[0], item[1], project_dir=project_dir, environ=environ, force=force,
                            registry=registry)
        if on_done is not None:
            on_done(result)
        return result

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(targets)))) as pool:
        return list(pool.map(one, targets))


def _fetch_from_registry(pin: NodePin, folder: Path, registry: str, force: bool) -> NodeFetch:
    from envbuild.comfy.registry import RegistryError, fetch_registry_node

    try:
        got = fetch_registry_node(pin, folder, base=registry, force=force)
    except RegistryError as exc:
        return NodeFetch(pin.name, folder, "", None, "failed", exc.message)
    action = {"installed": "cloned", "unchanged": "unchanged", "refused": "refused"}[got.action]
    return NodeFetch(pin.name, folder, f"registry {pin.version}", None, action, got.problem, got.sha256)


def _default_branch(git: _Git, folder: Path, name: str, url: str) -> str:
    proc = git.run(["-C", str(folder), "ls-remote", "--symref", "origin", "HEAD"], f"asking {url} for {name}'s "
                   "default branch", check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD")
    raise GitError(f"{name}: cannot read the default branch of {url}", hint="pass --ref BRANCH_OR_TAG")


def _has(git: _Git, folder: Path, sha: str) -> bool:
    return git.run(["-C", str(folder), "cat-file", "-e", f"{sha}^{{commit}}"], "looking up a commit",
                   check=False).returncode == 0


def _listed(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
