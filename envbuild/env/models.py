"""Pinned model files: fetched into the per-user store, placed under ComfyUI's models/ by hard link.

The store (`<cache>/models/sha256/<hex>`, read-only files) holds one copy per machine; every deployment
and generation gets a hard link to it (a copy where the models folder is on another file system, said).
A file appears under models/ only once its bytes hashed to the pin (core/http/download.py verifies before
the store names it). Where the models go follows ComfyUI: `<base-directory>/models/<folder>`, else
`<checkout>/models/<folder>`.

Credentials come from the environment and go only to their own host: HF_TOKEN to huggingface.co,
CIVITAI_API_TOKEN to civitai.com, as an Authorization header (never in a URL, a file or a message).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

from envbuild.core.errors import EnvbuildError, UsageError
from envbuild.deploy.deployment import Deployment
from envbuild.settings.models import (
    CREDENTIALS_HINT,
    MODEL_FOLDERS,
    ModelPin,
    effective_url,
    filename_from_url,
    folder_problem,
    model_url_problem,
    name_from_filename,
    path_component_problem,
    valid_model_name,
    write_model_pins,
)

TOKENS = (("huggingface.co", "HF_TOKEN"), ("civitai.com", "CIVITAI_API_TOKEN"))
OnProgress = Callable[[str, int, "int | None"], None]  # (model name, bytes so far, total)
T = TypeVar("T")
R = TypeVar("R")


class ModelError(EnvbuildError):
    """A model could not be downloaded, or its bytes are not the pinned ones (exit 7: the machine does not
    hold what the deployment promises)."""

    exit_code = 7


class ModelFetch(NamedTuple):
    pin: ModelPin
    path: Path
    action: str  # "downloaded", "linked", "copied", "present", "failed", "modified"
    downloaded: int = 0  # bytes read from the network
    resumed_from: int = 0
    problem: str = ""
    status: int | None = None  # the HTTP status a failed download ended with
    mismatch: bool = False  # the server sent other bytes than the pin's


class ModelStatus(NamedTuple):
    pin: ModelPin
    path: Path
    state: str  # "ok", "missing", "modified"
    detail: str = ""

    def as_json(self, deployment: Deployment) -> dict[str, Any]:
        return {"name": self.pin.name, "state": self.state, "path": deployment.display(self.path),
                "folder": self.pin.folder, "filename": self.pin.filename, "sha256": self.pin.sha256,
                "size": self.pin.size, "url": self.pin.url, "detail": self.detail}


def pins_of(deployment: Deployment) -> tuple[ModelPin, ...]:
    settings = deployment.config.models
    return settings.pins if settings is not None else ()


def hf_endpoint(deployment: Deployment) -> str | None:
    """[models] hf-endpoint, else the environment's HF_ENDPOINT (huggingface_hub's own variable, often set
    machine-wide where huggingface.co is blocked)."""
    settings = deployment.config.models
    if settings is not None and settings.hf_endpoint:
        return settings.hf_endpoint
    value = deployment.env.get("HF_ENDPOINT", "").strip()
    if not value:
        return None
    problem = model_url_problem(value)
    if problem:
        from envbuild.core.errors import ConfigError

        raise ConfigError("HF_ENDPOINT", f"{problem}", hint="a mirror's base URL, e.g. https://hf-mirror.com")
    return value.rstrip("/")


def models_dir(deployment: Deployment) -> Path:
    """ComfyUI's models folder for this deployment: under --base-directory, else in the checkout."""
    config = deployment.config
    home = config.base_directory or config.comfyui
    if home is None:
        raise UsageError("envbuild.toml names no ComfyUI checkout or base directory: where models go is unknown",
                         hint="set [comfyui] path (or base-directory); models go to <it>/models/<folder>")
    return home / "models"


def model_path(deployment: Deployment, pin: ModelPin) -> Path:
    return models_dir(deployment) / pin.folder / pin.filename


def store_dir(deployment: Deployment) -> Path:
    return deployment.cache_dir / "models"


def auth_headers(url: str, env: Mapping[str, str]) -> dict[str, str]:
    """The token for `url`'s own host from the environment, as a header (nothing for any other host)."""
    host = (urlsplit(url).hostname or "").lower()
    for domain, variable in TOKENS:
        token = env.get(variable, "").strip()
        if token and (host == domain or host.endswith("." + domain)):
            return {"Authorization": f"Bearer {token}"}
    return {}


# -- placing files ----------------------------------------------------------------------------------

def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def place(stored: Path, target: Path) -> str:
    """A hard link to the store's file at `target` ("linked"), a copy across file systems ("copied"), or
    nothing when it is there already ("present"). Written beside the target and renamed over it: a reader
    never sees a half-copied model."""
    if _same_file(stored, target):
        return "present"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.envbuild-tmp")
    staged.unlink(missing_ok=True)
    try:
        os.link(stored, staged)
        action = "linked"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(stored, staged)  # its mtime kept: `is_store_copy` knows it again without a re-hash
        os.chmod(staged, 0o644)
        action = "copied"
    try:
        os.replace(staged, target)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return action


def is_store_copy(path: Path, stored: Path) -> bool:
    """`path` is the store's file, linked, or copied across file systems by `place` (same size and mtime)."""
    if _same_file(path, stored):
        return True
    try:
        mine, theirs = path.stat(), stored.stat()
    except OSError:
        return False
    return mine.st_size == theirs.st_size and mine.st_mtime_ns == theirs.st_mtime_ns


def placed_by_envbuild(path: Path, store: Path) -> bool:
    """`path` is one of the store's files (a hard link to it): envbuild put it there."""
    try:
        info = path.stat()
    except OSError:
        return False
    if info.st_nlink < 2:
        return False
    folder = store / "sha256"
    if not folder.is_dir():
        return False
    return any(entry.stat().st_ino == info.st_ino and entry.stat().st_dev == info.st_dev
               for entry in os.scandir(folder) if entry.is_file())


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# -- fetch --------------------------------------------------------------------------------------------

def in_parallel(items: Sequence[T], work: Callable[[T, threading.Event], R], jobs: int) -> list[R]:
    """`work` over `items`, `jobs` at a time, results in order. On Ctrl-C (or any error) the event is set and
    every download stops at its next chunk (`progress_for`), its partial kept for a resume, instead of the
    pool waiting for gigabytes to finish."""
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items))))
    try:
        futures = [pool.submit(work, item, stop) for item in items]
        return [future.result() for future in futures]
    except BaseException:
        stop.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def progress_for(name: str, on_progress: OnProgress | None, stop: threading.Event) -> Callable[[int, int | None], None]:
    def report(done: int, total: int | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # in a download thread: it ends there, the partial kept
        if on_progress is not None:
            on_progress(name, done, total)
    return report


def fetch_models(deployment: Deployment, pins: tuple[ModelPin, ...] | None = None, *, jobs: int = 4,
                 on_progress: OnProgress | None = None, on_done: Callable[[ModelFetch], None] | None = None,
                 force: bool = False) -> list[ModelFetch]:
    """Every pinned model at its place, verified: from the store when it is there, else downloaded (several
    at once). A file at a pinned path that envbuild did not place and that is not the pinned bytes is left
    alone ("modified") unless `force`."""
    chosen = pins_of(deployment) if pins is None else pins
    if not chosen:
        return []
    models_dir(deployment)  # refuse before any download when there is nowhere to put them

    def one(pin: ModelPin, stop: threading.Event) -> ModelFetch:
        result = _fetch_one(deployment, pin, progress_for(pin.name, on_progress, stop), force)
        if on_done is not None:
            on_done(result)
        return result

    return in_parallel(chosen, one, jobs)


def _fetch_one(deployment: Deployment, pin: ModelPin, progress: Callable[[int, int | None], None],
               force: bool) -> ModelFetch:
    from envbuild.core.http.download import DownloadFailure, download, store_file

    store = store_dir(deployment)
    target = model_path(deployment, pin)
    stored = store_file(store, pin.sha256)
    if stored.is_file() and is_store_copy(target, stored):
        return ModelFetch(pin, target, "present")
    if target.exists() and not stored.is_file():
        # A file put there by hand: hashed once; the pinned bytes join the store (a link, made read-only like
        # every file of the store, or a copy), named by their hash only once complete.
        if target.stat().st_size == pin.size and file_sha256(target) == pin.sha256:
            staged = store / "partial" / f"{pin.sha256}.adopted"
            staged.parent.mkdir(parents=True, exist_ok=True)
            staged.unlink(missing_ok=True)
            try:
                os.link(target, staged)
            except OSError:
                shutil.copy2(target, staged)
            os.chmod(staged, 0o444)
            stored.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, stored)
            return ModelFetch(pin, target, "present")
    if (target.exists() or target.is_symlink()) and not force and not placed_by_envbuild(target, store):
        return ModelFetch(pin, target, "modified", problem=f"{deployment.display(target)} holds other bytes than "
                          "the pin and envbuild did not place it: left alone (move it away, or pass --force)")
    url = effective_url(pin.url, hf_endpoint(deployment))
    try:
        fetched = download(url, store, sha256=pin.sha256, size=pin.size, headers=auth_headers(url, deployment.env),
                           progress=progress)
    except DownloadFailure as exc:
        return ModelFetch(pin, target, "failed", problem=exc.reason, status=exc.status, mismatch=exc.mismatch)
    action = place(fetched.path, target)
    if fetched.downloaded:
        action = "downloaded" if action == "linked" else f"downloaded, {action}"
    return ModelFetch(pin, target, action, fetched.downloaded, fetched.resumed_from)


def raise_failures(results: list[ModelFetch]) -> None:
    bad = [r for r in results if r.action in ("failed", "modified")]
    if bad:
        raise ModelError(f"{len(bad)} of {len(results)} model(s) not in place:\n  "
                         + "\n  ".join(f"model {r.pin.name}: {r.problem}" for r in bad),
                         hint=_hint(bad))


def _hint(bad: list[ModelFetch]) -> str:
    """From what each failure was (its status, a mismatch), never from its words: a hash can read "404"."""
    statuses = {r.status for r in bad}
    if statuses & {401, 403}:
        return ("a gated or private file: set HF_TOKEN (huggingface.co) or CIVITAI_API_TOKEN (civitai.com) in the "
                "environment, then run the command again")
    if 404 in statuses:
        return "the file moved: `envbuild model add NEW-URL --name NAME --sha256 HEX` re-points the pin"
    if any(r.mismatch for r in bad):
        return "the server sends other bytes than were pinned: nothing was placed; check the URL or the pin"
    if all(r.action == "modified" for r in bad):
        return "move those files away, or pass --force to replace them with the pinned ones"
    return "run the command again (a partial download is kept and resumed)"


# -- status, verify -------------------------------------------------------------------------------------

def model_statuses(deployment: Deployment, *, full_hash: bool = False) -> list[ModelStatus]:
    """ok / missing / modified for every pin: a hard link to the store's file is ok as it stands; any other
    file by its size (and, with `full_hash`, every file by a full re-hash)."""
    from envbuild.core.http.download import store_file

    store = store_dir(deployment)
    statuses = []
    for pin in pins_of(deployment):
        path = model_path(deployment, pin)
        if not path.is_file():
            statuses.append(ModelStatus(pin, path, "missing", "`envbuild fetch` downloads it"))
            continue
        size = path.stat().st_size
        if size != pin.size:
            statuses.append(ModelStatus(pin, path, "modified", f"{size:,} bytes, the pin says {pin.size:,}"))
            continue
        if full_hash or not is_store_copy(path, store_file(store, pin.sha256)):
            actual = file_sha256(path) if full_hash else None
            if actual is not None and actual != pin.sha256:
                statuses.append(ModelStatus(pin, path, "modified", f"sha256 {actual}, the pin says {pin.sha256}"))
                continue
        statuses.append(ModelStatus(pin, path, "ok", "hashed" if full_hash else ""))
    return statuses


# -- add, remove ----------------------------------------------------------------------------------------

class ModelAdded(NamedTuple):
    pin: ModelPin
    fetch: ModelFetch
    config_lines: tuple[str, ...]
    folder_from: str = "given"  # "given", "url" (named in its path) or "default" (checkpoints)


def guess_folder(url: str) -> str | None:
    """A model folder named in the URL's path (Comfy-Org's repackaged repositories keep `split_files/vae/...`)."""
    for part in reversed(urlsplit(url).path.split("/")[:-1]):
        if part in MODEL_FOLDERS:
            return part
    return None


def check_new_url(url: str) -> None:
    problem = model_url_problem(url)
    if problem:
        raise UsageError(f"the model's URL {problem}",
                         hint=CREDENTIALS_HINT if "credentials" in problem else "an http(s) URL of the model file")


def add_model(deployment: Deployment, url: str, *, folder: str | None, name: str | None, sha256: str | None,
              filename: str | None = None, on_progress: OnProgress | None = None) -> ModelAdded:
    """Download `url` (verified against `sha256` when given), place it, then pin it."""
    from envbuild.core.http.download import DownloadFailure, download

    config = deployment.config
    if config.source is None:
        raise UsageError("no envbuild.toml here to pin the model in", hint="`envbuild init` writes one")
    check_new_url(url)
    folder_from = "given" if folder else "url" if guess_folder(url) else "default"
    folder = folder or guess_folder(url) or "checkpoints"
    found = folder_problem(folder)
    if found:
        raise UsageError(f"--folder {folder!r} {found[0]}", hint=found[1])
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise UsageError(f"--sha256 {sha256!r} is not 64 hex digits", hint="the file's sha256, e.g. from the "
                             "model page or `sha256sum FILE`")
    if filename is not None and path_component_problem(filename):
        raise UsageError(f"--filename {filename!r} {path_component_problem(filename)}", hint="one file name")
    if name is not None and not valid_model_name(name):
        raise UsageError(f"`{name}` cannot be a model's name", hint="pass --name NAME (letters, digits, _ . + -)")
    models_dir(deployment)
    if sha256 is None:  # the same URL pinned already: its bytes are known (and likely in the store)
        sha256 = next((p.sha256 for p in pins_of(deployment) if p.url == url), None)
    fetch_url = effective_url(url, hf_endpoint(deployment))
    shown = name or filename or filename_from_url(url) or "model"
    progress = (lambda done, total: on_progress(shown, done, total)) if on_progress else None
    try:
        fetched = download(fetch_url, store_dir(deployment), sha256=sha256,
                           headers=auth_headers(fetch_url, deployment.env), progress=progress)
    except DownloadFailure as exc:
        raise ModelError(f"model {url}: {exc.reason}", hint=_hint([ModelFetch(
            ModelPin("", url, "", 0, folder, ""), Path(), "failed", problem=exc.reason, status=exc.status,
            mismatch=exc.mismatch)])) from None
    filename = filename or _usable(fetched.filename) or filename_from_url(url)
    problem = path_component_problem(filename)
    if problem:
        raise UsageError(f"the file name {filename!r} {problem}", hint="pass --filename NAME")
    name = name or name_from_filename(filename)
    if not valid_model_name(name):
        raise UsageError(f"`{name}` cannot be a model's name", hint="pass --name NAME (letters, digits, _ . + -)")
    pin = ModelPin(name, url, fetched.sha256, fetched.size, folder, filename)
    clash = next((p for p in pins_of(deployment) if p.name.lower() != name.lower()
                  and p.relative().lower() == pin.relative().lower()), None)
    if clash is not None:
        raise UsageError(f"models/{pin.relative()} is pinned already as {clash.name}",
                         hint=f"`envbuild model remove {clash.name}` first, or pass --filename")
    target = model_path(deployment, pin)
    if target.exists() and not _same_file(target, fetched.path) and not placed_by_envbuild(target, store_dir(
            deployment)) and file_sha256(target) != pin.sha256:
        raise UsageError(f"{deployment.display(target)} exists with other bytes and envbuild did not place it",
                         hint="move it away, or pass --filename for another name")
    action = place(fetched.path, target)
    if fetched.downloaded:
        action = "downloaded" if action == "linked" else f"downloaded, {action}"
    lines = write_model_pins(config.source, [pin])
    return ModelAdded(pin, ModelFetch(pin, target, action, fetched.downloaded, fetched.resumed_from),
                      tuple(lines), folder_from)


def _usable(filename: str | None) -> str | None:
    return filename if filename and path_component_problem(filename) is None else None


def remove_model(deployment: Deployment, name: str) -> tuple[str, ...]:
    """Unpin `name`; its file goes only when it is the pinned one and envbuild placed it (a link to the store)."""
    from envbuild.core.http.download import store_file

    config = deployment.config
    pin = next((p for p in pins_of(deployment) if p.name.lower() == name.lower()), None)
    if pin is None or config.source is None:
        known = ", ".join(p.name for p in pins_of(deployment)) or "none"
        raise UsageError(f"no model named {name} is pinned", hint=f"pinned models: {known}")
    lines = list(write_model_pins(config.source, [], remove=(pin.name,)))
    target = model_path(deployment, pin)
    if target.is_file() and is_store_copy(target, store_file(store_dir(deployment), pin.sha256)):
        target.unlink()
        lines.append(f"{deployment.display(target)} deleted (the store keeps its copy)")
    elif target.exists():
        lines.append(f"{deployment.display(target)} kept: envbuild did not place it")
    return tuple(lines)
