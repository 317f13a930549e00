"""The text of the files `envbuild image` writes: Containerfile, install script, entrypoint.

Pure functions of the settings, so the same lock and settings always give the same bytes (and the
same build-cache keys). Nothing here may name a path of this machine or a credential.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

DEFAULT_PORT = 8188
VENV = "/opt/venv"
COMFYUI = "/opt/comfyui"
DATA = "/data"
UID = 10001
CONSTRAINTS = "/opt/envbuild/lock/constraints.txt"

EXTRA_PATHS = f"""\
# Written by `envbuild image`: the custom nodes baked into the image, besides {DATA}/custom_nodes.
envbuild_image:
  base_path: {COMFYUI}
  custom_nodes: custom_nodes
"""

INSTALL_SH = f"""\
#!/bin/sh
# Written by `envbuild image`: the install steps of the build stages (never in the runtime image).
# uv checks every file against the lock's sha256. The CA bundle and uv's credentials arrive as build
# secrets (/run/secrets/ca, /run/secrets/uv-env) that exist only while a step runs.
set -eu
if [ -s /run/secrets/ca ]; then export SSL_CERT_FILE=/run/secrets/ca; fi
if [ -s /run/secrets/uv-env ]; then set -a; . /run/secrets/uv-env; set +a; fi
step=$1; shift
case "$step" in
  torch)
    # The torch layer: the torch family and what only it needs, from uv's export of the lock.
    uv venv --quiet --python "$(command -v python3)" {VENV}
    VIRTUAL_ENV={VENV} uv pip install --no-deps -r /envbuild-build/torch/pylock.toml
    ;;
  rest)
    # The rest of the lock; the files it adds go to {VENV}-rest, the runtime stage's second layer.
    list() {{ (cd {VENV} && find . \\( -type f -o -type l \\) -printf '%p\\t%s\\t%T@\\n' | LC_ALL=C sort); }}
    list > /tmp/before
    skip=""
    for name in "$@"; do skip="$skip --no-install-package $name"; done
    # shellcheck disable=SC2086
    uv sync --locked --inexact --no-install-project --project /envbuild-build/lock $skip
    # The venv must now hold exactly the lock: a dry run that would change anything fails the build.
    if uv sync --locked --inexact --no-install-project --project /envbuild-build/lock --dry-run 2>&1 \\
        | grep -E '^ [-+~] '; then
      echo "envbuild image: the environment does not hold the lock" >&2; exit 1
    fi
    list > /tmp/after
    mkdir -p {VENV}-rest
    LC_ALL=C comm -13 /tmp/before /tmp/after | cut -f1 > /tmp/changed
    tar -C {VENV} -cf - -T /tmp/changed | tar -C {VENV}-rest -xf -
    # The torch layer's packages must not be copied again (that would double the image).
    for name in "$@"; do
      if ls -d {VENV}-rest/lib/python*/site-packages/"$(echo "$name" | tr - _)"-*.dist-info 2>/dev/null; then
        echo "envbuild image: $name was installed again outside the torch layer" >&2; exit 1
      fi
    done
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
"""


def entrypoint(port: int) -> str:
    return f"""\
#!/bin/sh
# Written by `envbuild image`: starts ComfyUI as `envbuild run` does, with the locked venv's python
# and the torch guard (PIP_CONSTRAINT/UV_CONSTRAINT, set in the image's environment). Models,
# input, output and user live on the volume {DATA}; arguments given to the container come last, so they win.
set -eu
cd {COMFYUI}
exec {VENV}/bin/python {COMFYUI}/main.py --base-directory {DATA} --listen 0.0.0.0 --port {port} \\
  --extra-model-paths-config /opt/envbuild/extra_model_paths.yaml "$@"
"""


def guard_env(find_links: Sequence[str], default_index: str | None) -> dict[str, str]:
    """The torch guard of `envbuild run` (guard.guard_environment), with the image's paths."""
    env = {"PIP_CONSTRAINT": CONSTRAINTS, "UV_CONSTRAINT": CONSTRAINTS}
    if find_links:
        env["PIP_FIND_LINKS"] = " ".join(find_links)
        env["UV_FIND_LINKS"] = ",".join(find_links)
    if default_index:
        env["PIP_INDEX_URL"] = default_index
    return env


def containerfile(*, profile: str, base_image: str, uv_version: str, torch_layer: Sequence[str], port: int,
                  guard: Mapping[str, str], pins: Sequence[tuple[str, str, str]]) -> str:
    """The Containerfile (a valid Dockerfile too). `pins`: (name, url, commit) fetched by git in the build."""
    mounts = ("--mount=type=cache,id=envbuild-uv,target=/var/cache/envbuild-uv \\\n"
              "    --mount=type=secret,id=ca --mount=type=secret,id=uv-env")
    lines = [
        "# syntax=docker/dockerfile:1",
        f"# Written by `envbuild image --profile {profile}` from locks/{profile}/: do not edit, regenerate.",
        "# Build: podman build --secret id=ca,src=<CA bundle> --secret id=uv-env,src=<KEY=VALUE file> -t IMAGE .",
        "# (both secrets optional: a CA bundle for TLS through a proxy, UV_INDEX_* credentials or mirrors).",
        f"ARG BASE_IMAGE={base_image}",
        f"ARG UV_IMAGE=ghcr.io/astral-sh/uv:{uv_version}",
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
        "COPY build/install.sh /envbuild-build/install.sh",
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
