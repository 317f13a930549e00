"""Model files pinned in envbuild.toml: `[models.<name>]` url, sha256, size, folder, filename.

A workflow needs its checkpoints, LoRAs and VAEs as much as its packages. Each pinned model names where
it is downloaded from, the sha256 and size of its bytes (what is enforced: the URL may move, the bytes
may not), and the ComfyUI model folder it goes into. `[models] hf-endpoint` rewrites Hugging Face URLs to
a mirror (as huggingface_hub's HF_ENDPOINT does) for networks where huggingface.co is blocked.

Everything here is checked where it is read: a folder or file name is one path component (a pin can
never write outside the models directory), a URL carries no credentials (it is committed and printed;
tokens come from the environment: HF_TOKEN, CIVITAI_API_TOKEN).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

from envbuild.core.errors import ConfigError

SECTION = "models"
MODEL_KEYS = {"url", "sha256", "size", "folder", "filename"}
SETTING_KEYS = {"hf-endpoint"}
HF_ORIGIN = "https://huggingface.co"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")
URL_LIMIT = 2048
# ComfyUI's own model folders (folder_paths.py: folder_names_and_paths, ComfyUI v0.3.x-v0.4), with the
# legacy names it still maps (clip -> text_encoders, unet -> diffusion_models, t2i_adapter -> controlnet),
# and the folders the most used custom nodes read from models/ (IPAdapter, InstantID, AnimateDiff-Evolved,
# Impact/Ultralytics, ReActor, facerestore). Anything else is refused with the nearest name as a hint.
COMFY_FOLDERS = (
    "checkpoints", "configs", "loras", "vae", "text_encoders", "clip", "diffusion_models", "unet", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "t2i_adapter", "gligen",
    "upscale_models", "latent_upscale_models", "hypernetworks", "photomaker", "classifiers", "model_patches",
    "audio_encoders", "frame_interpolation",
)
NODE_FOLDERS = (
    "ipadapter", "instantid", "insightface", "pulid", "animatediff_models", "animatediff_motion_lora",
    "ultralytics", "sams", "facerestore_models", "facedetection", "reactor", "onnx", "LLM", "grounding-dino",
)
MODEL_FOLDERS = frozenset(COMFY_FOLDERS + NODE_FOLDERS)
# Query parameters that carry a secret in a download URL (Civitai's ?token=, a pre-signed S3/CDN link):
# such a URL must not be committed; the token comes from the environment instead.
_SECRET_PARAMS = re.compile(r"(token|api[_-]?key|key|signature|sig|x-amz-.*|x-goog-.*|auth.*|password|"
                            r"access[_-]?token|expires|policy|key-pair-id)", re.I)
CREDENTIALS_HINT = ("give the URL without them: envbuild sends HF_TOKEN to huggingface.co and CIVITAI_API_TOKEN to "
                    "civitai.com from the environment, never from a committed file")


class ModelPin(NamedTuple):
    """One model file: the bytes (sha256, size) are the pin; url is where they are fetched from."""

    name: str
    url: str
    sha256: str
    size: int
    folder: str
    filename: str

    def relative(self) -> str:
        """Its place under the models directory: `<folder>/<filename>`."""
        return f"{self.folder}/{self.filename}"


class ModelSettings(NamedTuple):
    pins: tuple[ModelPin, ...] = ()
    hf_endpoint: str | None = None  # replaces https://huggingface.co in every model URL


def model_url_problem(url: str) -> str | None:
    """Why `url` cannot be a committed model URL (None: it can). Credentials in it (a user and password, or
    a token or signature in the query) would be committed and printed."""
    if not url:
        return "is empty"
    if len(url) > URL_LIMIT:
        return f"is longer than {URL_LIMIT} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "holds white space or a control character"
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "is not an http(s) URL"
    if "@" in parts.netloc:
        return "carries credentials (a user name or token and password)"
    for key, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAMS.fullmatch(key):
            return f"carries credentials (the query parameter `{key}`)"
    return None


def path_component_problem(value: str) -> str | None:
    """Why `value` cannot be one file or folder name under models/ (None: it can)."""
    if not value or value in (".", ".."):
        return "is empty or a relative folder (`.`, `..`)"
    if "/" in value or "\\" in value or ".." in value:
        return "is not one path component (no `/`, `\\` or `..`)"
    if value.startswith((".", "-")) or ":" in value:
        return "starts with `.` or `-`, or holds `:`"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) or len(value) > 255:
        return "holds a control character or is longer than 255 characters"
    return None


def folder_problem(folder: str) -> tuple[str, str] | None:
    """(problem, hint) when `folder` is not a known model folder (None: it is)."""
    problem = path_component_problem(folder)
    if problem:
        return problem, "a ComfyUI model folder such as checkpoints, loras, vae, controlnet, text_encoders"
    if folder not in MODEL_FOLDERS:
        close = difflib.get_close_matches(folder, sorted(MODEL_FOLDERS), n=1, cutoff=0.6)
        lowered = next((f for f in MODEL_FOLDERS if f.lower() == folder.lower()), None)
        guess = lowered or (close[0] if close else None)
        hint = f"did you mean `{guess}`?" if guess else f"known folders: {', '.join(sorted(MODEL_FOLDERS))}"
        return "is not a ComfyUI model folder", hint
    return None


def valid_model_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def filename_from_url(url: str) -> str:
    """The last path segment of `url`, decoded (Hugging Face's `.../resolve/main/x.safetensors?download=true`
    gives `x.safetensors`)."""
    return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])


def name_from_filename(filename: str) -> str:
    """A pin name made from a file name: its stem with anything outside the name grammar replaced."""
    stem = filename.rsplit(".", 1)[0] if "." in filename.lstrip(".") else filename
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem).lstrip(".-+") or "model"
    return name[:100]


def effective_url(url: str, hf_endpoint: str | None) -> str:
    """Where a pinned URL is fetched from: a huggingface.co URL under `hf_endpoint` when one is set."""
    if hf_endpoint and (url == HF_ORIGIN or url.startswith(HF_ORIGIN + "/")):
        return hf_endpoint.rstrip("/") + url[len(HF_ORIGIN):]
    return url


def read_models(table: Any, path: Path) -> ModelSettings:
    """`[models]` as written: `hf-endpoint` and one `[models.<name>]` table per file, each checked."""
    from envbuild.core.tomlfile import expect

    expect(table, dict, SECTION, path)
    pins: list[ModelPin] = []
    seen: dict[str, str] = {}
    hf_endpoint = None
    for name, entry in table.items():
        if not isinstance(entry, dict):
            if name not in SETTING_KEYS:
                close = difflib.get_close_matches(name, sorted(SETTING_KEYS), n=1)
                raise ConfigError(_at(path, SECTION, name), f"unknown key `{SECTION}.{name}`",
                                  hint=f"did you mean `{close[0]}`?" if close else
                                  "[models] holds `hf-endpoint` and one [models.NAME] table per model file")
            hf_endpoint = _endpoint(entry, path)
            continue
        pin = _read_pin(str(name), entry, path)
        key = pin.relative().lower()
        if key in seen:
            raise ConfigError(_at(path, f"{SECTION}.{name}", "filename"),
                              f"`{SECTION}.{name}` and `{SECTION}.{seen[key]}` both go to models/{pin.relative()}")
        seen[key] = str(name)
        pins.append(pin)
    return ModelSettings(tuple(pins), hf_endpoint)


def _endpoint(value: Any, path: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(_at(path, SECTION, "hf-endpoint"), f"`models.hf-endpoint` must be a string, not {value!r}")
    problem = model_url_problem(value)
    if problem:
        raise ConfigError(_at(path, SECTION, "hf-endpoint"), f"`models.hf-endpoint` {problem}",
                          hint='a mirror\'s base URL, e.g. hf-endpoint = "https://hf-mirror.com"')
    return value.rstrip("/")


def _read_pin(name: str, entry: Mapping[str, Any], path: Path) -> ModelPin:
    from envbuild.core.tomlfile import check_keys

    where = f"{SECTION}.{name}"
    if not valid_model_name(name):
        raise ConfigError(_at(path, where, "url"), f"`{where}`: a model's name is letters, digits and _ . + - "
                                                   "(at most 100, not starting with . + -)")
    check_keys(entry, MODEL_KEYS, f"{where}.", _at(path, where, "url"))
    for key in ("url", "sha256", "size", "folder"):
        if key not in entry:
            raise ConfigError(_at(path, where, "url"), f"`{where}.{key}` is missing",
                              hint="`envbuild model add URL` downloads the file and writes a complete pin")

    def text(key: str) -> str:
        value = entry[key]
        if not isinstance(value, str):
            raise ConfigError(_at(path, where, key), f"`{where}.{key}` must be a string, not {value!r}")
        return value

    url = text("url")
    problem = model_url_problem(url)
    if problem:
        raise ConfigError(_at(path, where, "url"), f"`{where}.url` {problem}",
                          hint=CREDENTIALS_HINT if "credentials" in problem else "an http(s) URL of the file")
    sha256 = text("sha256").lower()
    if not _SHA256.fullmatch(sha256):
        raise ConfigError(_at(path, where, "sha256"), f"`{where}.sha256` must be 64 hex digits, not {sha256!r}",
                          hint="`envbuild model add URL` computes it (or `sha256sum FILE`)")
    size = entry["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError(_at(path, where, "size"), f"`{where}.size` must be a number of bytes, not {size!r}")
    folder = text("folder")
    found = folder_problem(folder)
    if found:
        raise ConfigError(_at(path, where, "folder"), f"`{where}.folder` {folder!r} {found[0]}", hint=found[1])
    filename = text("filename") if "filename" in entry else filename_from_url(url)
    problem = path_component_problem(filename)
    if problem:
        key = "filename" if "filename" in entry else "url"
        raise ConfigError(_at(path, where, key), f"`{where}.filename` {filename!r} {problem}",
                          hint="one file name, e.g. filename = \"model.safetensors\"")
    return ModelPin(name, url, sha256, int(size), folder, filename)


_HEADER = re.compile(r"\s*\[\s*(?P<name>[^\]\[]+?)\s*\]\s*(#.*)?$")


def _at(path: Path, section: str, key: str) -> str:
    """`envbuild.toml:LINE` of `key` in `[section]` (else of the `[section]` header) for a message."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return str(path)
    current, header_line = "", None
    own = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            current = header.group("name").replace('"', "").replace("'", "").replace(" ", "")
            if current == section:
                header_line = number
        elif current == section and own.match(line):
            return f"{path}:{number}"
    return f"{path}:{header_line}" if header_line else str(path)


# -- writing pins (tomlkit: every comment and key the user wrote is kept) ---------------------------------

def write_model_pins(path: Path, pins: list[ModelPin], *, remove: tuple[str, ...] = ()) -> list[str]:
    """Set `[models.<name>]` for each pin (and remove the names in `remove`) in one write; a line per change."""
    import tomlkit

    from envbuild.core.fsio import atomic_write

    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    if SECTION not in document:
        document[SECTION] = tomlkit.table(is_super_table=True)
    models = document[SECTION]
    said = []
    for name in remove:
        for key in list(models.keys()):
            if key.lower() == name.lower():
                del models[key]
                said.append(f"{path.name}: [{SECTION}.{key}] removed")
    for pin in pins:
        for key in list(models.keys()):
            if key.lower() == pin.name.lower():
                del models[key]
        table = tomlkit.table()
        table["url"] = pin.url
        table["sha256"] = pin.sha256
        table["size"] = pin.size
        table["folder"] = pin.folder
        if pin.filename != filename_from_url(pin.url):
            table["filename"] = pin.filename
        models[pin.name] = table
        said.append(f"{path.name}: [{SECTION}.{pin.name}] {pin.relative()} sha256 = {pin.sha256[:12]}…")
    if not models:
        del document[SECTION]
    atomic_write(path, tomlkit.dumps(document))
    return said
