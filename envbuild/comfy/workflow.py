"""A ComfyUI workflow read from what ComfyUI saves: the UI JSON, the API JSON, or a PNG/WebP holding them.

The UI JSON (frontend's serialised graph, schema version 0.4 and 1) lists `nodes`, each with a `type` and
`properties` that carry `cnr_id` (the Comfy Registry id), `aux_id` (GitHub `owner/repo` for a node not in
the registry) and `ver` (a version, or a commit), and `models` (`name`, `url`, optional `hash`/`hash_type`,
`directory`) at its root and in a node's properties; subgraphs keep their nodes under
`definitions.subgraphs[].nodes`. The API JSON is a dict of node id -> {class_type, inputs}: node types and
file names only. ComfyUI's SaveImage writes both into PNG text chunks (`workflow`, `prompt`); its WebP
savers write them into EXIF as `workflow:<json>` / `prompt:<json>`.

Every read is bounded (the file, a zTXt/iTXt chunk inflated with a cap: a decompression bomb stops at the
cap, the number of nodes and models), with errors that say which limit and how large.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from envbuild.core.errors import UsageError
from envbuild.core.safeio import MIB, FileTooLargeError, NotARegularFileError, read_regular_file

MAX_FILE = 128 * MIB  # a PNG with a workflow is a few MB; a 4K one tens
MAX_TEXT = 32 * MIB  # the workflow JSON itself (the largest real ones are a few MB)
MAX_NODES = 10_000
MAX_MODELS = 1_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CORE = "comfy-core"
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")


class WorkflowError(UsageError):
    """A file that is not a workflow, or one past a limit."""


class WorkflowNode(NamedTuple):
    type: str
    cnr_id: str | None = None
    aux_id: str | None = None
    ver: str | None = None


class WorkflowModel(NamedTuple):
    name: str
    url: str
    directory: str
    hash: str | None = None  # lower-case hex
    hash_type: str | None = None


class Workflow(NamedTuple):
    kind: str  # "ui" or "api"
    nodes: tuple[WorkflowNode, ...]
    models: tuple[WorkflowModel, ...]
    files: tuple[str, ...]  # model file names the nodes' inputs name (the API JSON's only trace of models)

    def node_types(self) -> tuple[str, ...]:
        return tuple(sorted({n.type for n in self.nodes if n.type}))


def read_workflow(path: Path) -> Workflow:
    try:
        raw = read_regular_file(path, MAX_FILE)
    except FileNotFoundError:
        raise WorkflowError(f"{path} does not exist") from None
    except (NotARegularFileError, FileTooLargeError) as exc:
        raise WorkflowError(f"{path}: {exc.reason} (a workflow file is at most {MAX_FILE // MIB} MiB)") from None
    if raw.startswith(PNG_MAGIC):
        texts = dict(png_texts(raw, path))
    elif raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        texts = dict(webp_texts(raw, path))
    else:
        return parse_workflow(_json(raw, path, "the file"), path)
    for key in ("workflow", "prompt"):  # the UI JSON carries more (node provenance, model URLs)
        if key in texts:
            return parse_workflow(_json(texts[key], path, f"its `{key}` metadata"), path)
    raise WorkflowError(f"{path}: an image without a ComfyUI workflow in its metadata",
                        hint="ComfyUI's SaveImage writes `workflow` and `prompt` text chunks; a re-encoded or "
                             "stripped image has none")


def _json(data: bytes, path: Path, what: str) -> Any:
    if len(data) > MAX_TEXT:
        raise WorkflowError(f"{path}: {what} is {len(data):,} bytes, more than the {MAX_TEXT // MIB} MiB a workflow "
                            "may be")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WorkflowError(f"{path}: {what} is not JSON ({str(exc)[:120]})",
                            hint="export the workflow from ComfyUI (Workflow > Export, or Export (API))") from None


# -- images ----------------------------------------------------------------------------------------

def png_texts(raw: bytes, path: Path) -> Iterator[tuple[str, bytes]]:
    """(keyword, text) of each tEXt, zTXt and iTXt chunk; compressed text inflated with a cap."""
    pos = len(PNG_MAGIC)
    while pos + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        data = raw[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            return
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        keyword, _, rest = data.partition(b"\0")
        name = keyword.decode("latin-1")
        if kind == b"tEXt":
            yield name, rest
        elif kind == b"zTXt" and rest[:1] == b"\0":
            yield name, _inflate(rest[1:], path, name)
        elif kind == b"iTXt" and len(rest) >= 2:
            compressed, text = rest[0], rest[2:]
            _, _, text = text.partition(b"\0")  # language tag
            _, _, text = text.partition(b"\0")  # translated keyword
            yield name, _inflate(text, path, name) if compressed else text


def _inflate(data: bytes, path: Path, name: str) -> bytes:
    """zlib with a cap on the output: a bomb (a few KB inflating to gigabytes) stops at MAX_TEXT."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_TEXT + 1)
    except zlib.error as exc:
        raise WorkflowError(f"{path}: the `{name}` chunk cannot be inflated ({exc})") from None
    if len(out) > MAX_TEXT or inflater.unconsumed_tail:
        raise WorkflowError(f"{path}: the `{name}` chunk inflates to more than {MAX_TEXT // MIB} MiB (a decompression "
                            "bomb, or not a workflow): not read further")
    return out


def webp_texts(raw: bytes, path: Path) -> Iterator[tuple[str, bytes]]:
    """`workflow:`/`prompt:` values from a WebP's EXIF (ComfyUI's savers) or XMP chunk."""
    pos = 12
    while pos + 8 <= len(raw):
        kind, length = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        data = raw[pos + 8:pos + 8 + length]
        pos += 8 + length + (length & 1)
        if kind not in (b"EXIF", b"XMP "):
            continue
        if length > MAX_TEXT:
            raise WorkflowError(f"{path}: its {kind.decode().strip()} chunk is {length:,} bytes, more than the "
                                f"{MAX_TEXT // MIB} MiB a workflow may be")
        for key in ("workflow", "prompt"):
            marker = data.find(key.encode() + b":")
            if marker < 0:
                continue
            text = data[marker + len(key) + 1:].decode("utf-8", errors="replace")
            try:
                value, end = json.JSONDecoder().raw_decode(text)
            except (ValueError, RecursionError):
                continue
            yield key, text[:end].encode()


# -- the two JSON shapes ---------------------------------------------------------------------------------

def parse_workflow(data: Any, path: Path) -> Workflow:
    if isinstance(data, dict) and isinstance(data.get("nodes"), list):
        return _ui(data, path)
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return _api(data, path)
    raise WorkflowError(f"{path}: not a ComfyUI workflow (neither the UI JSON with `nodes` nor the API JSON of "
                        "node id -> class_type)")


def _ui(data: dict[str, Any], path: Path) -> Workflow:
    raw_nodes: list[Any] = list(data["nodes"])
    definitions = data.get("definitions")
    if isinstance(definitions, dict) and isinstance(definitions.get("subgraphs"), list):
        for subgraph in definitions["subgraphs"][:MAX_NODES]:
            if isinstance(subgraph, dict) and isinstance(subgraph.get("nodes"), list):
                raw_nodes.extend(subgraph["nodes"])
                _limit(len(raw_nodes), MAX_NODES, "nodes", path)
    _limit(len(raw_nodes), MAX_NODES, "nodes", path)
    nodes: list[WorkflowNode] = []
    models = list(_models(data.get("models"), path))
    files: list[str] = []
    for node in raw_nodes:
        if not isinstance(node, dict):
            continue
        found = node.get("properties")
        props: dict[str, Any] = found if isinstance(found, dict) else {}
        nodes.append(WorkflowNode(_text(node.get("type")) or "", _text(props.get("cnr_id")),
                                  _text(props.get("aux_id")), _text(props.get("ver"))))
        models.extend(_models(props.get("models"), path))
        _limit(len(models), MAX_MODELS, "models", path)
        values = node.get("widgets_values")
        if isinstance(values, list):
            files.extend(v for v in values[:64] if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES))
    return Workflow("ui", tuple(nodes), tuple(dict.fromkeys(models)), tuple(dict.fromkeys(files)))


def _api(data: dict[str, Any], path: Path) -> Workflow:
    _limit(len(data), MAX_NODES, "nodes", path)
    nodes: list[WorkflowNode] = []
    files: list[str] = []
    for node in data.values():
        nodes.append(WorkflowNode(_text(node.get("class_type")) or ""))
        inputs = node.get("inputs")
        if isinstance(inputs, dict):
            files.extend(v for v in list(inputs.values())[:64]
                         if isinstance(v, str) and v.lower().endswith(MODEL_SUFFIXES))
    return Workflow("api", tuple(nodes), (), tuple(dict.fromkeys(files)))


def _models(value: Any, path: Path) -> Iterator[WorkflowModel]:
    if not isinstance(value, list):
        return
    _limit(len(value), MAX_MODELS, "models", path)
    for entry in value:
        if not isinstance(entry, dict):
            continue
        name, url, directory = (_text(entry.get(k)) for k in ("name", "url", "directory"))
        if not (name and url and directory):
            continue
        digest = _text(entry.get("hash"))
        kind = (_text(entry.get("hash_type")) or "").lower() or None
        yield WorkflowModel(name, url, directory, digest.lower() if digest else None, kind)


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() and len(value) < 4096 else None


def _limit(count: int, limit: int, what: str, path: Path) -> None:
    if count > limit:
        raise WorkflowError(f"{path}: more than {limit:,} {what} (a workflow this large is not one ComfyUI saved)")


COMMIT = re.compile(r"[0-9a-f]{40}")
AUX_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
