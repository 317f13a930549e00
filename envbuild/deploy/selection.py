"""Where a profile is chosen: the one rule every command follows.

`--profile NAME`, `--cuda VERSION` or `auto`, else the first profile of envbuild.toml's
`[lock] profiles`; then the torch source (`--torch-source`, else `[lock] torch-source`) turns an
index profile into its `-pypi` variant or back. Commands that use a committed lock (sync, run,
verify, export, check, doctor) go through the same rule and then need that lock to exist; when
only its sibling does (cu126 asked, cu126-pypi committed) they say so with the exact command.
"""

from __future__ import annotations

from typing import NamedTuple

from envbuild.core.errors import StaleLockError, UsageError
from envbuild.deploy.deployment import Deployment
from envbuild.torch.profile import PYPI_SUFFIX, TORCH_SOURCE_INDEX, TORCH_SOURCE_PYPI, TorchProfile

AUTO = "auto"  # --cuda auto / --profile auto: let GPU detection choose
LISTED_IN = "envbuild.toml `lock.profiles`"  # where a default profile name comes from


class ProfileRequest(NamedTuple):
    """What the command line asked for (None: not given)."""

    profile: str | None = None
    cuda: str | None = None


def profile_to_lock(deployment: Deployment, request: ProfileRequest) -> TorchProfile:
    """The profile a `lock` (or `merge`) works on; `auto` picks among all profiles for this machine."""
    _one_of_profile_or_cuda(request)
    if AUTO in request:
        from envbuild.torch.fitting import candidates, choose_or_explain

        return choose_or_explain(candidates(deployment.catalogue, deployment.torch_source), environ=deployment.env)
    return _named(deployment, request) or _default(deployment)


def profiles_to_lock(deployment: Deployment) -> list[TorchProfile]:
    """`lock --all`: every profile envbuild.toml lists (the torch source applied), else every profile
    of the catalogue from that torch source."""
    config, catalogue = deployment.config, deployment.catalogue
    if config.profiles:
        return [with_source(deployment, catalogue.get(name, listed_in=LISTED_IN)) for name in config.profiles]
    every = [catalogue.get(name) for name in catalogue.names()]
    source = deployment.torch_source
    return [p for p in every if source is None or p.torch_source == source or p.accelerator == "mps"]


def profile_to_use(deployment: Deployment, request: ProfileRequest, *, command: str) -> TorchProfile:
    """The profile whose committed lock a command uses (sync, run, verify, export, check, doctor).

    Its lock must exist: a missing one is a StaleLockError that names a committed sibling (the same
    CUDA with the other torch source) and the exact `command` line that would use it.
    """
    _one_of_profile_or_cuda(request)
    committed = deployment.committed()
    if AUTO in request:
        from envbuild.torch.fitting import choose_committed

        return choose_committed(deployment.catalogue, deployment.lock_dir, committed, environ=deployment.env)
    profile = _named(deployment, request)
    if profile is None:
        if deployment.config.profiles or len(committed) != 1:
            profile = _default(deployment)
        else:
            profile = deployment.catalogue.get(committed[0])
    require_lock(deployment, profile, command=command)
    return profile


def require_lock(deployment: Deployment, profile: TorchProfile, *, command: str) -> None:
    """A profile's lock folder must exist; say which sibling does when this one does not."""
    folder = deployment.folder(profile)
    if folder.exists():
        return
    where = deployment.display(folder.path)
    sibling = _committed_sibling(deployment, profile)
    if sibling is not None:
        source = sibling.torch_source
        what = "torch from PyPI" if source == TORCH_SOURCE_PYPI else "torch from the PyTorch index"
        raise StaleLockError(
            f"no lock for profile {profile.name} at {where}, but there is one for {sibling.name} ({what})",
            hint=f"run `{command} --torch-source {source}` (or set [lock] torch-source = \"{source}\" in "
                 f"envbuild.toml), or lock this one with `envbuild lock --profile {profile.name}`")
    raise StaleLockError(f"no lock for profile {profile.name} at {where}",
                         hint=f"run `envbuild lock --profile {profile.name}` (on a machine that can reach its "
                              "index) and commit it")


def with_source(deployment: Deployment, profile: TorchProfile) -> TorchProfile:
    """The torch source applied: cu126 → cu126-pypi for "pypi", cu126-pypi → cu126 for "pytorch-index"."""
    return deployment.catalogue.with_source(profile, deployment.torch_source)


def _named(deployment: Deployment, request: ProfileRequest) -> TorchProfile | None:
    catalogue = deployment.catalogue
    if request.profile:
        return with_source(deployment, catalogue.get(request.profile))
    if request.cuda:
        return with_source(deployment, catalogue.for_cuda(request.cuda))
    return None


def _default(deployment: Deployment) -> TorchProfile:
    config = deployment.config
    if config.profiles:
        return with_source(deployment, deployment.catalogue.get(config.profiles[0], listed_in=LISTED_IN))
    committed = deployment.committed()
    where = (f"{deployment.display(config.source)} lists no [lock] profiles" if config.source is not None
             else "no envbuild.toml here or in a folder above")
    if config.source is None and not committed:  # not a deployment at all: --profile would not help
        raise UsageError(f"no envbuild.toml in {config.project_dir} or a folder above",
                         hint="run `envbuild init` in your ComfyUI folder (or the folder above it), or run the "
                              "command where your envbuild.toml is (`-C DIR`)")
    raise UsageError(f"which profile? none given, and {where}",
                     hint="pass --profile NAME or --cuda VERSION (or `auto`), or list profiles under [lock] in "
                          "envbuild.toml" + (f"; committed locks: {', '.join(committed)}" if committed else ""))


def _one_of_profile_or_cuda(request: ProfileRequest) -> None:
    if request.profile and request.cuda:
        raise UsageError("give either --profile or --cuda, not both")


def _committed_sibling(deployment: Deployment, profile: TorchProfile) -> TorchProfile | None:
    """The same build with the other torch source, when its lock exists."""
    if profile.base is not None:
        name = profile.base
    elif profile.torch_source == TORCH_SOURCE_INDEX:
        name = f"{profile.name}{PYPI_SUFFIX}"
    else:
        return None
    if name not in deployment.catalogue.profiles or not deployment.folder(name).exists():
        return None
    return deployment.catalogue.get(name)
