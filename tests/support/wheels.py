"""Build tiny but spec-valid wheels with the stdlib only.

Tests need real installable distributions (torch with a given CUDA label, its
family, planted look-alikes) without touching the network. Every wheel is
byte-for-byte deterministic so a lock's sha256 is stable across runs.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from email.parser import BytesParser
from pathlib import Path

__all__ = [
    "build_family_wheel",
    "build_torch_wheel",
    "build_wheel",
    "canonical_name",
    "read_wheel_metadata",
    "record_digest",
    "wheel_dist_name",
]

# The zip epoch; any fixed value works, this one is what reproducible-build tools use.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_GENERATOR = "envbuild-tests (1.0)"


def canonical_name(name: str) -> str:
    """PEP 503 normalized project name (`Typing_Extensions` -> `typing-extensions`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_dist_name(name: str) -> str:
    """The distribution component of a wheel filename / dist-info dir (`-` and `.` -> `_`)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def _import_name(name: str) -> str:
    return re.sub(r"[-.]+", "_", name).lower()


def record_digest(data: bytes) -> str:
    """The `sha256=<urlsafe-b64-nopad>` form RECORD uses."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _expand_tags(tag: str) -> list[str]:
    """`py2.py3-none-any` -> one `Tag:` per combination, as the wheel spec requires."""
    try:
        pys, abis, plats = tag.split("-")
    except ValueError:
        raise ValueError(f"wheel tag must be python-abi-platform, got {tag!r}") from None
    return [
        f"{p}-{a}-{pl}" for p in pys.split(".") for a in abis.split(".") for pl in plats.split(".")
    ]


def _metadata(
    name: str, version: str, summary: str, requires_dist: Sequence[str], requires_python: str | None
) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: {summary}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {req}" for req in requires_dist]
    return "\n".join(lines) + "\n\n"


def _wheel_file(tag: str) -> str:
    purelib = "true" if tag.endswith("-any") else "false"
    lines = ["Wheel-Version: 1.0", f"Generator: {_GENERATOR}", f"Root-Is-Purelib: {purelib}"]
    lines += [f"Tag: {t}" for t in _expand_tags(tag)]
    return "\n".join(lines) + "\n\n"


def _top_level(paths: Sequence[str]) -> str:
    tops = set()
    for path in paths:
        first = path.split("/", 1)[0]
        if first.endswith((".dist-info", ".data")):
            continue
        if "/" not in path:
            if not first.endswith(".py"):
                continue
            first = first[: -len(".py")]
        tops.add(first)
    return "".join(f"{t}\n" for t in sorted(tops))


def _zipinfo(path: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(path, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3  # unix, so the bytes do not depend on the host OS
    info.external_attr = (0o100644 & 0xFFFF) << 16
    return info


def build_wheel(
    dest: Path,
    name: str,
    version: str,
    *,
    files: Mapping[str, str | bytes] | None = None,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = None,
    tag: str = "py3-none-any",
    summary: str = "test package",
    import_name: str | None = None,
) -> Path:
    """Write `{dist}-{version}-{tag}.whl` into `dest` and return its path.

    Default content is `<import_name>/__init__.py` defining `__version__`; pass
    `files` (archive path -> content) to choose the payload, or `import_name`
    to keep the default module but rename it (e.g. `PIL` for pillow).
    """
    dist = wheel_dist_name(name)
    if files is None:
        module = import_name or _import_name(name)
        files = {f"{module}/__init__.py": f'__version__ = "{version}"\n'}
    payload = {
        path: (data.encode("utf-8") if isinstance(data, str) else bytes(data))
        for path, data in files.items()
    }
    for path in payload:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"unsafe archive path {path!r}")

    dist_info = f"{dist}-{version}.dist-info"
    meta = {
        f"{dist_info}/METADATA": _metadata(name, version, summary, requires_dist, requires_python),
        f"{dist_info}/WHEEL": _wheel_file(tag),
        f"{dist_info}/top_level.txt": _top_level(sorted(payload)),
    }
    entries: list[tuple[str, bytes]] = sorted(payload.items())
    entries += sorted((path, text.encode("utf-8")) for path, text in meta.items())

    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    for path, data in entries:
        writer.writerow([path, record_digest(data), len(data)])
    writer.writerow([f"{dist_info}/RECORD", "", ""])
    entries.append((f"{dist_info}/RECORD", record.getvalue().encode("utf-8")))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path, data in entries:
            zf.writestr(_zipinfo(path), data)

    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{dist}-{version}-{tag}.whl"
    out.write_bytes(buf.getvalue())
    return out


def _torch_version_py(version: str, cuda: str | None, hip: str | None) -> str:
    """Mirror the shape of the real generated `torch/version.py`."""
    git = hashlib.sha1(f"torch {version}".encode()).hexdigest()
    return (
        "from typing import Optional\n\n"
        "__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip', 'xpu']\n"
        f"__version__ = {version!r}\n"
        "debug = False\n"
        f"cuda: Optional[str] = {cuda!r}\n"
        f"git_version = {git!r}\n"
        f"hip: Optional[str] = {hip!r}\n"
        "xpu: Optional[str] = None\n"
    )


_TORCH_INIT = '''"""Fake torch built by envbuild's test support."""
from torch import version as version

__version__ = version.__version__


import os as _os


class cuda:
    """Enough of torch.cuda for smoke checks; FAKE_TORCH_CUDA_DEVICES=N plays a machine with N GPUs."""

    @staticmethod
    def is_available() -> bool:
        return int(_os.environ.get("FAKE_TORCH_CUDA_DEVICES", "0")) > 0

    @staticmethod
    def device_count() -> int:
        return int(_os.environ.get("FAKE_TORCH_CUDA_DEVICES", "0"))
'''


def build_torch_wheel(
    dest: Path,
    version: str,
    *,
    cuda: str | None = None,
    hip: str | None = None,
    requires_dist: Sequence[str] = ("filelock", "typing-extensions"),
    requires_python: str | None = ">=3.9.0",
) -> Path:
    """A `torch` wheel whose `torch.version.cuda`/`.hip` report the given build."""
    files = {
        "torch/__init__.py": _TORCH_INIT,
        "torch/version.py": _torch_version_py(version, cuda, hip),
    }
    return build_wheel(
        dest,
        "torch",
        version,
        files=files,
        requires_dist=requires_dist,
        requires_python=requires_python,
        summary="Tensors and Dynamic neural networks in Python (test double)",
    )


def build_family_wheel(
    dest: Path,
    name: str,
    version: str,
    torch_pin: str,
    *,
    requires_dist: Sequence[str] = (),
    requires_python: str | None = ">=3.9",
) -> Path:
    """torchvision/torchaudio pinning `torch==<torch_pin>` (local label too), as real ones do."""
    module = _import_name(name)
    files = {
        f"{module}/__init__.py": f"from {module}.version import __version__ as __version__\n",
        f"{module}/version.py": f"__version__ = {version!r}\ngit_version = 'test'\n",
    }
    return build_wheel(
        dest,
        name,
        version,
        files=files,
        requires_dist=[f"torch=={torch_pin}", *requires_dist],
        requires_python=requires_python,
    )


def read_wheel_metadata(wheel: Path) -> tuple[bytes, dict[str, str | list[str]]]:
    """Return the raw METADATA bytes of a wheel and its parsed headers.

    Multi-valued fields (Requires-Dist) come back as lists. Used by the index to
    serve PEP 658 metadata and by tests to check what was built.
    """
    with zipfile.ZipFile(wheel) as zf:
        candidates = [
            n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
        ]
        if len(candidates) != 1:
            raise ValueError(f"{wheel.name}: expected one .dist-info/METADATA, found {candidates}")
        raw = zf.read(candidates[0])
    msg = BytesParser().parsebytes(raw, headersonly=True)
    fields: dict[str, str | list[str]] = {}
    for key in set(msg.keys()):
        values = msg.get_all(key) or []
        fields[key] = (
            list(values)
            if key.lower() in {"requires-dist", "classifier", "provides-extra"}
            else values[0]
        )
    return raw, fields
