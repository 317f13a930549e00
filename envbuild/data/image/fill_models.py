"""Fill the models volume from the manifest `envbuild image` wrote (/opt/envbuild/models.json): run by the
image's entrypoint before ComfyUI starts, or alone as a Kubernetes init container
(`ENVBUILD_MODELS=only`). Standard library only: it runs with the image's Python, before anything else.

Each model lands at <data>/models/<folder>/<filename> only after its bytes hashed to the pinned sha256;
a file already there with the pinned size is skipped (ENVBUILD_MODELS_VERIFY=1 re-hashes it instead).
A dropped connection resumes with an HTTP Range request from the partial (`.<filename>.envbuild-part`,
kept across restarts). Tokens come from the container's environment (HF_TOKEN for huggingface.co,
CIVITAI_API_TOKEN for civitai.com), sent to that host only, never printed; HF_ENDPOINT (or the deployment's
[models] hf-endpoint) rewrites https://huggingface.co URLs to a mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

MANIFEST = Path(os.environ.get("ENVBUILD_MODELS_MANIFEST", "/opt/envbuild/models.json"))
DATA = Path(os.environ.get("ENVBUILD_DATA", "/data"))
TOKENS = (("huggingface.co", "HF_TOKEN"), ("civitai.com", "CIVITAI_API_TOKEN"))
CHUNK = 1024 * 1024
TRIES = 5
HF = "https://huggingface.co"


def main() -> int:
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    endpoint = os.environ.get("HF_ENDPOINT") or manifest.get("hf_endpoint")
    verify = os.environ.get("ENVBUILD_MODELS_VERIFY", "") == "1"
    failed = 0
    for model in manifest.get("models", []):
        for key in ("folder", "filename"):  # written by envbuild, checked again: never outside models/
            value = model[key]
            if not value or "/" in value or "\\" in value or value.startswith(".") or ".." in value:
                print(f"envbuild: model {model['name']}: refused {key} {value!r}", file=sys.stderr)
                return 2
        target = DATA / "models" / model["folder"] / model["filename"]
        if target.is_file() and target.stat().st_size == model["size"]:
            if not verify or sha256_of(target) == model["sha256"]:
                print(f"envbuild: model {model['name']}: present")
                continue
            print(f"envbuild: model {model['name']}: {target} holds other bytes: replaced")
        url = model["url"]
        if endpoint and (url == HF or url.startswith(HF + "/")):
            url = endpoint.rstrip("/") + url[len(HF):]
        try:
            fetch(url, target, model["sha256"], model["size"])
        except (OSError, ValueError) as exc:
            failed += 1
            print(f"envbuild: model {model['name']}: {exc}", file=sys.stderr)
            continue
        print(f"envbuild: model {model['name']}: downloaded, sha256 verified")
    return 1 if failed else 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, sha256: str, size: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.envbuild-part")
    host = (urlsplit(url).hostname or "").lower()
    token = next((os.environ.get(var, "") for domain, var in TOKENS
                  if host == domain or host.endswith("." + domain)), "")
    failures, reason = 0, ""
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            break
        if failures >= TRIES:
            raise OSError(f"{reason} ({failures} tries; the partial is kept for the next start)")
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
        if token:
            request.add_unredirected_header("Authorization", f"Bearer {token}")  # not to a redirect's host
        if have:
            request.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                mode = "ab" if response.status == 206 else "wb"  # 200: the server ignored Range, from byte 0
                with open(part, mode) as out:
                    while block := response.read(CHUNK):
                        out.write(block)
            failures = 0 if part.stat().st_size > have else failures + 1
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 404):
                raise OSError(f"HTTP {exc.code} from {redacted(url)}"
                              + (" (set HF_TOKEN or CIVITAI_API_TOKEN)" if exc.code != 404 else "")) from None
            failures, reason = failures + 1, f"HTTP {exc.code}"
            time.sleep(min(2 ** failures, 10))
        except (urllib.error.URLError, OSError) as exc:
            failures, reason = failures + 1, f"connection failed ({type(exc).__name__})"
            time.sleep(min(2 ** failures, 10))
    actual = sha256_of(part)
    if actual != sha256:
        part.unlink()
        raise ValueError(f"the server sent bytes with sha256 {actual}, but the pin says {sha256}: nothing placed")
    os.replace(part, target)


def redacted(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{parts.path}"


if __name__ == "__main__":
    sys.exit(main())
