"""The text of the files `envbuild image` writes: Containerfile, install script, entrypoint.

Pure functions of the settings, so the same lock and settings always give the same bytes (and the
same build-cache keys). Nothing here may name a path of this machine or a credential.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from envbuild.uv import names as uv_names

DEFAULT_PORT = 8188
VENV = "/opt/venv"
COMFYUI = "/opt/comfyui"
DATA = "/data"
UID = 10001
CONSTRAINTS = "/opt/envbuild/lock/constraints.txt"
MARK = "Written by `envbuild image"  # the Containerfile's second line: -o may replace only such a folder

EXTRA_PATHS = f"""\
# Written by `envbuild image`: the custom nodes baked into the image, besides {DATA}/custom_nodes.
envbuild_image:
  base_path: {COMFYUI}
  custom_nodes: custom_nodes
"""

BUILD_FILES = ("install.sh", "mirror.py")  # envbuild/data/image/: the build stages' steps, never in the image


def build_file(name: str) -> bytes:
    """A file of the build stages, shipped with envbuild (envbuild/data/image/)."""
    import importlib.resources

    return (importlib.resources.files("envbuild") / "data" / "image" / name).read_bytes()


MANAGER_CONFIG = "/opt/envbuild/manager-config.ini"  # the pip Manager's config.ini for an empty volume


MODELS_MANIFEST = "/opt/envbuild/models.json"  # [models] pins: the entrypoint fills the volume from it


def models_manifest(models: Sequence[Mapping[str, object]], hf_endpoint: str | None) -> str:
    """The pinned models as the image's fill_models.py reads them (url, sha256, size, folder, filename)."""
    return json.dumps({"hf_endpoint": hf_endpoint, "models": list(models)}, indent=2, sort_keys=True) + "\n"


def entrypoint(port: int, *, enable_manager: bool = False, models: bool = False) -> str:
    """`enable_manager`: the Manager is the pip package of ComfyUI's manager_requirements.txt (as for `run`);
    its config.ini lives on the volume (<user>/__manager), so the first start puts the one envbuild wrote
    there (`manager setup`'s keys and [manager]'s settings), and never replaces one that exists."""
    manager = "--enable-manager " if enable_manager else ""
    seed = f"""\
if [ ! -e {DATA}/user/__manager/config.ini ]; then
  mkdir -p {DATA}/user/__manager && cp {MANAGER_CONFIG} {DATA}/user/__manager/config.ini
fi
""" if enable_manager else ""
    fill = f"""\
# The pinned models: fetched into {DATA}/models and verified by sha256 (what is there is skipped).
# ENVBUILD_MODELS=skip starts without them; ENVBUILD_MODELS=only fills the volume and exits (an init container).
if [ "${{ENVBUILD_MODELS:-fill}}" != skip ]; then
  {VENV}/bin/python /opt/envbuild/fill_models.py
  if [ "${{ENVBUILD_MODELS:-fill}}" = only ]; then exit 0; fi
fi
""" if models else ""
    return f"""\
#!/bin/sh
# Written by `envbuild image`: starts ComfyUI as `envbuild run` does, with the locked venv's python
# and the torch guard (PIP_CONSTRAINT/UV_CONSTRAINT, set in the image's environment). Models,
# input, output and user live on the volume {DATA}; arguments given to the container come last, so they win.
set -eu
cd {COMFYUI}
{seed}{fill}exec {VENV}/bin/python {COMFYUI}/main.py {manager}--base-directory {DATA} --listen 0.0.0.0 --port {port} \\
  --extra-model-paths-config /opt/envbuild/extra_model_paths.yaml "$@"
"""


def guard_env(find_links: Sequence[str], default_index: str | None) -> dict[str, str]:
    """The torch guard of `envbuild run` (guard.guard_environment), with the image's paths."""
    env = {"PIP_CONSTRAINT": CONSTRAINTS, uv_names.CONSTRAINT: CONSTRAINTS}
    if find_links:
        env["PIP_FIND_LINKS"] = " ".join(find_links)
        env[uv_names.FIND_LINKS] = ",".join(find_links)
    if default_index:
        env["PIP_INDEX_URL"] = default_index
    return env


def default_uv_image(uv_version: str) -> str:
    """uv's own image at the version that made the lock (the image's uv runs `uv sync --locked` on it)."""
    return f"ghcr.io/astral-sh/uv:{uv_version}"


def containerfile(*, profile: str, base_image: str, uv_image: str, torch_layer: Sequence[str], port: int,
                  guard: Mapping[str, str], pins: Sequence[tuple[str, str, str]]) -> str:
    """The Containerfile (a valid Dockerfile too). `pins`: (name, url, commit) fetched by git in the build."""
    mounts = ("--mount=type=cache,id=envbuild-uv,target=/var/cache/envbuild-uv \\\n"
              "    --mount=type=secret,id=ca --mount=type=secret,id=uv-env --mount=type=secret,id=mirror")
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# {MARK} --profile {profile}` from locks/{profile}/: do not edit, regenerate.",
        "# Build: podman build [--secret id=ca,src=FILE] [--secret id=uv-env,src=FILE] [--secret id=mirror,src=FILE] .",
        "# (all optional: a CA bundle for a TLS proxy; UV_INDEX_* credentials; mirror rules: see build/install.sh)",
        f"ARG BASE_IMAGE={base_image}",
        f"ARG UV_IMAGE={uv_image}",
    ]
    if pins:
        lines.append("ARG GIT_IMAGE=docker.io/alpine/git:v2.47.2")
    lines += ["", "FROM ${UV_IMAGE} AS uv"]
    for name, url, commit in pins:
        lines += [
            "",
            f"# {name} at the commit the lock records, checked after the fetch",
            f"FROM ${{GIT_IMAGE}} AS src-{name}",
            f"RUN git init -q /src && cd /src && git fetch -q --depth 1 {json.dumps(url)} {commit} \\",
            f"    && git checkout -q FETCH_HEAD && test \"$(git rev-parse HEAD)\" = {commit} && rm -rf .git",
        ]
    layer = " ".join(torch_layer)
    lines += [
        "",
        "# Build stage 1: the torch layer (the torch family and what only it needs)",
        "FROM ${BASE_IMAGE} AS torch",
        f"ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_PROJECT_ENVIRONMENT={VENV} \\",
        "    UV_CACHE_DIR=/var/cache/envbuild-uv",
        "COPY --from=uv /uv /usr/local/bin/uv",
        "COPY build/ /envbuild-build/",
        "COPY torch/pylock.toml /envbuild-build/torch/pylock.toml",
        f"RUN {mounts} \\\n    /envbuild-build/install.sh torch",
        "",
        "# Build stage 2: the rest of the lock, `uv sync --locked` (hashes checked)",
        "FROM torch AS deps",
        "COPY lock/pyproject.toml lock/uv.lock /envbuild-build/lock/",
        f"RUN {mounts} \\\n    /envbuild-build/install.sh rest {layer}",
        "",
        "# The runtime stage: the venv, ComfyUI, the nodes; no uv, no cache, no secret",
        "FROM ${BASE_IMAGE}",
        f"ENV PATH={VENV}/bin:$PATH VIRTUAL_ENV={VENV} UV_PYTHON={VENV}/bin/python PYTHONUNBUFFERED=1 \\",
        "    HOME=/home/comfyui \\",
        "    " + " \\\n    ".join(f"{key}={json.dumps(value)}" for key, value in sorted(guard.items())),
        f"RUN mkdir -p {DATA} /home/comfyui && chown {UID}:{UID} {DATA} /home/comfyui",
        f"COPY --from=torch {VENV} {VENV}",
        f"COPY --from=deps {VENV}-rest/ {VENV}/",
    ]
    if any(name == "comfyui" for name, _, _ in pins):
        lines.append(f"COPY --from=src-comfyui /src/ {COMFYUI}/")
    else:
        lines.append(f"COPY comfyui/ {COMFYUI}/")
    lines += [
        "COPY lock/ /opt/envbuild/lock/",
        "COPY envbuild/ /opt/envbuild/",
        f"COPY nodes/ {COMFYUI}/custom_nodes/",
    ]
    if any(name == "manager" for name, _, _ in pins):
        lines.append(f"COPY --from=src-manager /src/ {COMFYUI}/custom_nodes/comfyui-manager/")
    lines += [
        f"USER {UID}:{UID}",
        f"WORKDIR {COMFYUI}",
        f"EXPOSE {port}",
        f"VOLUME {DATA}",
        'ENTRYPOINT ["/opt/envbuild/entrypoint.sh"]',
        "",
    ]
    return "\n".join(lines)
