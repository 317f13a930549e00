"""Custom nodes from the Comfy Registry, pinned by id and version, their archive's sha256 enforced.

The Registry serves a node version as a zip: `GET <base>/nodes/<id>/install?version=<v>` answers
JSON whose `downloadUrl` is the archive (what the Manager's `cnr_install` fetches). The Registry
publishes no hash for it, so envbuild records the archive's sha256 at the first fetch (written into
envbuild.toml, to be committed) and refuses any other archive after: a re-published version is
named, not silently installed. The archive is unpacked as the Manager does (into custom_nodes/<id>
with a `.tracking` file listing what it extracted), so the Manager still recognises the node.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import quote

from envbuild.core.errors import EnvbuildError
from envbuild.settings.pins import NodePin

ARCHIVE_LIMIT = 512 * 1024 * 1024  # a node archive is a few MiB; a model in one is not a node
INFLATED_LIMIT = 2 * 1024 * 1024 * 1024  # a node's code; a node archive carrying models is refused
MEMBER_LIMIT = 100_000
VCS_FOLDERS = frozenset({".git", ".hg", ".svn"})
REGISTRY_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")  # 1.2.3, 1.0.0-beta.2
API_LIMIT = 1024 * 1024  # the install API answers a few hundred bytes of JSON
DEADLINE = 600.0  # seconds for one read in all, however slowly the server sends
TRACKING = ".tracking"


class RegistryError(EnvbuildError):
    """The registry did not serve a node version, or served another archive than the pinned one."""

    exit_code = 8


class RegistryFetch(NamedTuple):
    action: str  # "installed" | "unchanged" | "refused"
    sha256: str
    problem: str = ""


def installed_version(folder: Path) -> str | None:
    """The version a registry node on disk says it is ([project] version of its pyproject.toml)."""
    from envbuild.core.tomlfile import load_toml

    if not (folder / TRACKING).is_file():
        return None
    try:
        project = load_toml(folder / "pyproject.toml").get("project", {})
    except EnvbuildError:
        return None
    version = project.get("version") if isinstance(project, dict) else None
    return str(version) if version is not None else None


def fetch_registry_node(pin: NodePin, folder: Path, *, base: str, force: bool = False,
                        timeout: float = 60.0) -> RegistryFetch:
    """Install `pin` into `folder` (idempotent: a folder at the pinned version is left alone)."""
    if folder.exists():
        have = installed_version(folder)
        if have == pin.version:  # at its pin: --force replaces a node at another version, never this one
            return RegistryFetch("unchanged", pin.sha256)
        if not force:
            what = f"is at version {have}" if have else "exists and is not a registry install of it"
            return RegistryFetch("refused", pin.sha256,
                                 f"{what}, not at its pin {pin.version}; `envbuild fetch --force` replaces it")
    archive, url = download(pin, base=base, timeout=timeout)
    digest = hashlib.sha256(archive).hexdigest()
    if pin.sha256 and digest != pin.sha256:
        return RegistryFetch("refused", pin.sha256,
                             f"the registry's archive for {pin.version} ({url}) has sha256 {digest}, but the pin "
                             f"records {pin.sha256}: it was re-published or replaced; nothing installed")
    _unpack(archive, folder, pin)
    return RegistryFetch("installed", digest)


def download(pin: NodePin, *, base: str, timeout: float) -> tuple[bytes, str]:
    """The registry's archive for a pin and the URL it came from: the API's answer and the archive each
    bounded in size and in total time (`DEADLINE`)."""
    from envbuild.core.http.client import HttpFailure, read_bytes, read_json

    api = f"{base.rstrip('/')}/nodes/{quote(pin.name, safe='')}/install?version={quote(pin.version, safe='')}"
    what = f"registry node {pin.name} {pin.version}"
    try:
        answer = read_json(api, limit=API_LIMIT, timeout=timeout, deadline=DEADLINE)
    except HttpFailure as exc:
        hint = ("check the id and version (the Manager's snapshot names them), and [nodes] registry"
                if exc.status is not None else "check [nodes] registry and this machine's network")
        raise RegistryError(f"{what}: {exc}", hint=hint) from None
    url = answer.get("downloadUrl") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise RegistryError(f"{what}: {api} did not answer a downloadUrl")
    try:
        return read_bytes(url, limit=ARCHIVE_LIMIT, timeout=timeout, deadline=DEADLINE)
    except HttpFailure as exc:
        raise RegistryError(f"{what}: {exc}", hint="check [nodes] registry and this machine's network") from None


def _unpack(archive: bytes, folder: Path, pin: NodePin) -> None:
    """Extract into a sibling scratch folder, then swap it in: never a half-unpacked node."""
    try:
        zipped = zipfile.ZipFile(io.BytesIO(archive))
    except zipfile.BadZipFile:
        raise RegistryError(f"registry node {pin.name} {pin.version}: the archive is not a zip file") from None
    names = _checked_members(zipped, f"registry node {pin.name} {pin.version}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{pin.name}-", dir=folder.parent))
    try:
        _extract(zipped, names, scratch)
        (scratch / TRACKING).write_text("\n".join(names), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _checked_members(zipped: zipfile.ZipFile, what: str) -> list[str]:
    """The archive's files, refused whole before anything is written when one would land outside the
    folder, belongs to a VCS (a `.git/config` can run commands through git's hooks and fsmonitor), collides
    with another (`x` a file and `x/y`), or the archive inflates beyond `INFLATED_LIMIT` or `MEMBER_LIMIT`
    (a few MB of zip can inflate to GBs). Sizes are the declared ones, and `_extract` holds each member
    to its declared size."""
    infos = zipped.infolist()
    if len(infos) > MEMBER_LIMIT:
        raise RegistryError(f"{what}: the archive holds {len(infos):,} entries, more than the {MEMBER_LIMIT:,} a "
                            "node may have; nothing installed")
    total, files, dirs = 0, [], set()
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\\" in name or "\0" in name:
            raise RegistryError(f"{what}: the archive holds a path outside its folder ({name!r}); nothing installed")
        if any(part in VCS_FOLDERS for part in parts):
            raise RegistryError(f"{what}: the archive holds version-control data ({name!r}), which can make git "
                                "run commands; nothing installed",
                                hint="ask the node's publisher to publish an archive without it")
        if info.is_dir():
            dirs.add(PurePosixPath(name).as_posix().rstrip("/"))
            continue
        total += info.file_size
        if total > INFLATED_LIMIT:
            raise RegistryError(f"{what}: the archive inflates to more than {INFLATED_LIMIT // (1024 * 1024)} MiB; "
                                "nothing installed")
        files.append(name)
    seen = {n.lower() for n in files}
    for name in files:
        for parent in PurePosixPath(name).parents:
            if parent.as_posix() != "." and parent.as_posix().lower() in seen:
                raise RegistryError(f"{what}: the archive holds both a file {parent.as_posix()!r} and a path "
                                    f"inside it ({name!r}); nothing installed")
    if len(seen) != len(files):
        raise RegistryError(f"{what}: the archive holds two files whose names differ only in case; nothing "
                            "installed")
    return files


def _extract(zipped: zipfile.ZipFile, names: list[str], target: Path) -> None:
    """Each checked member written as a plain file, read no further than its declared size."""
    for name in names:
        info = zipped.getinfo(name)
        destination = target.joinpath(*PurePosixPath(name).parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        with zipped.open(info) as source, open(destination, "wb") as sink:
            left = info.file_size
            while chunk := source.read(min(1024 * 1024, left + 1)):
                left -= len(chunk)
                if left < 0:
                    raise RegistryError(f"{name!r} inflates beyond the size its archive declares; nothing installed")
                sink.write(chunk)


def latest_version(node_id: str, *, base: str, timeout: float = 60.0) -> str:
    """The version the registry publishes as a node's latest (`GET /nodes/<id>`: `latest_version.version`)."""
    from envbuild.core.http.client import HttpFailure, read_json

    api = f"{base.rstrip('/')}/nodes/{quote(node_id, safe='')}"
    try:
        answer = read_json(api, limit=API_LIMIT * 8, timeout=timeout, deadline=DEADLINE)
    except HttpFailure as exc:
        hint = ("check the id (the registry's node page names it)" if exc.status == 404
                else "check [nodes] registry and this machine's network")
        raise RegistryError(f"registry node {node_id}: {exc}", hint=hint) from None
    latest = answer.get("latest_version") if isinstance(answer, dict) else None
    version = latest.get("version") if isinstance(latest, dict) else None
    if not isinstance(version, str) or not REGISTRY_VERSION.fullmatch(version):
        raise RegistryError(f"registry node {node_id}: {api} names no published latest version",
                            hint=f"name one: `envbuild node add {node_id}@VERSION`")
    return version
