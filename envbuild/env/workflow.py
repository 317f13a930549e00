"""`workflow import`: a ComfyUI workflow's custom nodes and model files become pins in envbuild.toml.

A node's `cnr_id` + `ver` (a published version) is a Comfy Registry pin, as `node import` writes one;
`aux_id` (GitHub owner/repo) + a commit in `ver` is a git pin; `comfy-core` is ComfyUI itself and never a
pin. Each model listed with a URL is downloaded (verified when the workflow gives a sha256; else hashed
by envbuild, said so) and pinned. What cannot be pinned is reported with the reason, and the node types
that no pinned node or ComfyUI provides (as far as their code on disk says) are listed.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import NamedTuple

from envbuild.comfy.nodes import pinned_folder
from envbuild.comfy.workflow import AUX_ID, COMMIT, CORE, Workflow, WorkflowModel, read_workflow
from envbuild.core.errors import UsageError
from envbuild.deploy.deployment import Deployment
from envbuild.env.models import (
    OnProgress,
    auth_headers,
    hf_endpoint,
    in_parallel,
    model_path,
    models_dir,
    pins_of,
    place,
    progress_for,
    store_dir,
)
from envbuild.settings.models import (
    ModelPin,
    effective_url,
    folder_problem,
    model_url_problem,
    name_from_filename,
    path_component_problem,
    write_model_pins,
)
from envbuild.settings.pins import NodePin, valid_name

_SCAN_FILES = 4000  # .py files read per search for node types (bounded: a huge node tree is not walked whole)
_SCAN_BYTES = 2 * 1024 * 1024  # per file
_SCAN_TOTAL = 128 * 1024 * 1024  # per search


class WorkflowImport(NamedTuple):
    workflow: Workflow
    node_pins: tuple[NodePin, ...]
    model_pins: tuple[ModelPin, ...]
    computed: tuple[str, ...]  # model names whose sha256 envbuild computed (the workflow gave none)
    skipped: tuple[str, ...]  # what was not pinned, with why
    unprovided: tuple[str, ...]  # node types no pinned node (or ComfyUI) is known to provide
    config_lines: tuple[str, ...]


def import_workflow(deployment: Deployment, path: Path, *, models: bool = True, jobs: int = 4,
                    on_progress: OnProgress | None = None) -> WorkflowImport:
    from envbuild.settings.pins_edit import write_import

    config = deployment.config
    if config.source is None:
        raise UsageError("importing a workflow needs an envbuild.toml", hint="run `envbuild init` first")
    workflow = read_workflow(path)
    skipped: list[str] = []
    node_pins = _node_pins(workflow, config.node_pins, skipped)
    model_pins: list[ModelPin] = []
    computed: list[str] = []
    if models:
        model_pins, computed = _model_pins(deployment, workflow.models, skipped, jobs, on_progress)
    elif workflow.models:
        skipped.append(f"{len(workflow.models)} model(s): --no-models")
    lines = list(write_import(config.source, list(node_pins), None)) if node_pins else []
    if model_pins:
        lines.extend(write_model_pins(config.source, model_pins))
    pinned_files = {p.filename for p in (*pins_of(deployment), *model_pins)}
    for name in workflow.files:
        if name.rsplit("/", 1)[-1] not in pinned_files:
            skipped.append(f"model file {name}: named by a node, but the workflow gives no URL for it "
                           "(`envbuild model add URL --folder FOLDER` pins it)")
    all_pins = (*config.node_pins, *node_pins)
    return WorkflowImport(workflow, node_pins, tuple(model_pins), tuple(computed), tuple(skipped),
                          _unprovided(deployment, workflow, all_pins), tuple(lines))


def _node_pins(workflow: Workflow, existing: tuple[NodePin, ...], skipped: list[str]) -> tuple[NodePin, ...]:
    have = {p.name.lower() for p in existing}
    pins: dict[str, NodePin] = {}
    for node in workflow.nodes:
        if node.cnr_id == CORE or not (node.cnr_id or node.aux_id):
            continue
        ver = (node.ver or "").strip()
        pin: NodePin | None = None
        if node.aux_id and COMMIT.fullmatch(ver.lower()) and AUX_ID.fullmatch(node.aux_id):
            name = node.aux_id.split("/", 1)[1].removesuffix(".git")
            pin = NodePin(name, f"https://github.com/{node.aux_id}", ver.lower(), ver.lower())
        elif node.cnr_id and ver and not COMMIT.fullmatch(ver.lower()) and ver not in ("latest", "nightly") \
                and "comfyui-manager" not in node.cnr_id.lower():
            pin = NodePin(node.cnr_id, "", "", ver, False, ver)
        if pin is None:
            what = node.cnr_id or node.aux_id
            skipped.append(f"node {what} ({node.type}): no version or commit to pin it at (`envbuild node add URL "
                           "--ref REF` pins it)")
            continue
        if not valid_name(pin.name):
            skipped.append(f"node {pin.name}: not a usable folder name")
            continue
        if pin.name.lower() in have:
            continue  # pinned already: the deployment's pin stays
        pins.setdefault(pin.name.lower(), pin)
    return tuple(pins.values())


def _model_pins(deployment: Deployment, wanted: tuple[WorkflowModel, ...], skipped: list[str], jobs: int,
                on_progress: OnProgress | None) -> tuple[list[ModelPin], list[str]]:
    from envbuild.core.http.download import DownloadFailure, download

    existing = {p.relative().lower(): p for p in pins_of(deployment)}
    todo: list[tuple[WorkflowModel, str | None]] = []
    for model in wanted:
        problem = _model_problem(model)
        if problem:
            skipped.append(f"model {model.name}: {problem}")
            continue
        if f"{model.directory}/{model.name}".lower() in existing:
            continue
        digest = model.hash if model.hash and (model.hash_type or "sha256") == "sha256" \
            and len(model.hash) == 64 else None
        todo.append((model, digest))
    if not todo:
        return [], []
    models_dir(deployment)
    store = store_dir(deployment)

    def one(item: tuple[WorkflowModel, str | None], stop: threading.Event) -> ModelPin | str:
        model, digest = item
        url = effective_url(model.url, hf_endpoint(deployment))
        try:
            fetched = download(url, store, sha256=digest, headers=auth_headers(url, deployment.env),
                               progress=progress_for(model.name, on_progress, stop))
        except DownloadFailure as exc:
            return f"model {model.name}: {exc.reason}"
        pin = ModelPin(name_from_filename(model.name), model.url, fetched.sha256, fetched.size, model.directory,
                       model.name)
        place(fetched.path, model_path(deployment, pin))
        return pin

    results = in_parallel(todo, one, jobs)
    pins, computed, names = [], [], {p.name.lower() for p in pins_of(deployment)}
    for (_, digest), result in zip(todo, results, strict=True):
        if isinstance(result, str):
            skipped.append(result)
            continue
        name, n = result.name, 2
        while name.lower() in names:
            name, n = f"{result.name}-{n}", n + 1
        names.add(name.lower())
        pins.append(result._replace(name=name))
        if digest is None:
            computed.append(name)
    return pins, computed


def _model_problem(model: WorkflowModel) -> str | None:
    url = model_url_problem(model.url)
    if url:
        return f"its URL {url}"
    folder = folder_problem(model.directory)
    if folder:
        return f"its directory {model.directory!r} {folder[0]} ({folder[1]})"
    name = path_component_problem(model.name)
    return f"its name {name}" if name else None


def _unprovided(deployment: Deployment, workflow: Workflow, pins: tuple[NodePin, ...]) -> tuple[str, ...]:
    """Node types not marked comfy-core or a pinned node's, and not named in ComfyUI's or a pinned node's code."""
    pinned = {p.name.lower() for p in pins}
    unknown = set()
    for node in workflow.nodes:
        if not node.type or node.cnr_id == CORE:
            continue
        owner = node.cnr_id or (node.aux_id.split("/", 1)[1] if node.aux_id and "/" in node.aux_id else None)
        if owner is None or owner.lower() not in pinned:
            unknown.add(node.type)
    if not unknown:
        return ()
    folders = [f for p in pins if (f := pinned_folder(deployment.config, p)) is not None and f.is_dir()]
    if deployment.config.comfyui is not None and deployment.config.comfyui.is_dir():
        folders.append(deployment.config.comfyui)
    return tuple(sorted(unknown - _named_in(folders, unknown)))


def _named_in(folders: list[Path], types: set[str]) -> set[str]:
    """The types found quoted in the folders' Python files (bounded in files and bytes)."""
    found: set[str] = set()
    needles = {t: (f'"{t}"'.encode(), f"'{t}'".encode()) for t in types}
    seen = read = 0
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("models", "node_modules", "venv")]
            for file in files:
                if seen >= _SCAN_FILES or read >= _SCAN_TOTAL or len(found) == len(types):
                    return found  # the walk itself stops too: a huge tree is not traversed to its end
                if not file.endswith(".py"):
                    continue
                seen += 1
                try:
                    with open(os.path.join(root, file), "rb") as handle:
                        text = handle.read(_SCAN_BYTES)
                except OSError:
                    continue
                read += len(text)
                found.update(t for t, (a, b) in needles.items() if t not in found and (a in text or b in text))
    return found
