"""uv.lock read into values in one place: every source kind, files, edges, and typed errors for broken files."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from envbuild.core.errors import LockIntegrityError, StaleLockError, UvError
from envbuild.pkgs.lockdir import LockFolder
from envbuild.pkgs.uvlock import (
    Dependency,
    LockedFile,
    count_locked_packages,
    first_locked_version,
    parse_uv_lock,
    read_uv_lock,
)

ROOT = Path(__file__).resolve().parents[1]
SHA = "sha256:" + "a" * 64

LOCK = textwrap.dedent(f"""\
    version = 1
    revision = 3
    requires-python = ">=3.10, <3.14"
    resolution-markers = [
        "sys_platform == 'linux'",
        "sys_platform == 'darwin'",
    ]
    supported-markers = [
        "sys_platform == 'linux'",
        "sys_platform == 'darwin'",
    ]
    required-markers = [
        "sys_platform == 'linux'",
    ]

    [[package]]
    name = "Comfy_Env"
    version = "0.0.0"
    source = {{ virtual = "." }}
    dependencies = [
        {{ name = "torch", version = "2.7.1+cu126", source = {{ registry = "https://download.pytorch.org/whl/cu126" }}, marker = "sys_platform == 'linux'" }},
        {{ name = "Torch", version = "2.7.1", source = {{ registry = "https://pypi.org/simple" }}, marker = "sys_platform == 'darwin'" }},
        {{ name = "gitpkg" }},
    ]

    [package.optional-dependencies]
    video = [
        {{ name = "av", extra = ["ffmpeg"] }},
    ]

    [package.dev-dependencies]
    test = [
        {{ name = "localpkg" }},
    ]

    [package.metadata]
    requires-dist = [{{ name = "torch", url = "https://example.invalid/ignored" }}]

    [[package]]
    name = "torch"
    version = "2.7.1+cu126"
    source = {{ registry = "https://download.pytorch.org/whl/cu126/" }}
    resolution-markers = [
        "sys_platform == 'linux'",
    ]
    wheels = [
        {{ url = "https://download.pytorch.org/whl/cu126/torch-2.7.1%2Bcu126-cp312-linux_x86_64.whl", hash = "{SHA}", size = 123 }},
    ]

    [[package]]
    name = "torch"
    version = "2.7.1"
    source = {{ registry = "https://pypi.org/simple" }}
    resolution-markers = [
        "sys_platform == 'darwin'",
    ]
    sdist = {{ url = "https://files.pythonhosted.org/packages/torch-2.7.1.tar.gz", hash = "{SHA}", size = 9 }}
    wheels = [
        {{ url = "https://files.pythonhosted.org/packages/torch-2.7.1-cp312-macosx.whl" }},
    ]

    [[package]]
    name = "gitpkg"
    version = "1.0"
    source = {{ git = "https://github.com/o/r?rev=main#abc" }}

    [[package]]
    name = "urlpkg"
    version = "2.0"
    source = {{ url = "https://example.com/urlpkg-2.0.tar.gz" }}
    sdist = {{ hash = "{SHA}" }}

    [[package]]
    name = "localpkg"
    version = "0.1"
    source = {{ path = "wheels/localpkg-0.1-py3-none-any.whl" }}
    wheels = [
        {{ filename = "localpkg-0.1-py3-none-any.whl", hash = "{SHA}" }},
    ]

    [[package]]
    name = "av"
    version = "14.0"
    source = {{ directory = "vendor/av" }}

    [[package]]
    name = "editme"
    version = "0.2"
    source = {{ editable = "src/editme" }}
    """)


def test_every_field_and_source_kind_becomes_a_value() -> None:
    lock = parse_uv_lock(LOCK, "locks/x/uv.lock")
    assert (lock.path, lock.version, lock.revision, lock.requires_python) == (
        Path("locks/x/uv.lock"), 1, 3, ">=3.10, <3.14")
    assert lock.supported_markers == ("sys_platform == 'linux'", "sys_platform == 'darwin'")
    assert lock.required_markers == ("sys_platform == 'linux'",)
    assert len(lock.resolution_markers) == 2
    kinds = {p.name: p.source_kind for p in lock.packages}
    assert kinds == {"comfy-env": "virtual", "torch": "registry", "gitpkg": "git", "urlpkg": "url",
                     "localpkg": "path", "av": "directory", "editme": "editable"}
    root = lock.packages[0]
    assert root.is_root and not any(p.is_root for p in lock.packages[1:])
    assert root.dependencies == (
        Dependency("torch", "2.7.1+cu126", {"registry": "https://download.pytorch.org/whl/cu126"},
                   "sys_platform == 'linux'"),
        Dependency("torch", "2.7.1", {"registry": "https://pypi.org/simple"}, "sys_platform == 'darwin'"),
        Dependency("gitpkg"),
        Dependency("av", extras=("ffmpeg",), group="extra:video"),
        Dependency("localpkg", group="dev:test"),
    )


def test_files_hashes_and_forks() -> None:
    lock = parse_uv_lock(LOCK, "uv.lock")
    cuda, mac = lock.named("TORCH")
    assert cuda.registry == "https://download.pytorch.org/whl/cu126"  # trailing slash dropped for comparing
    assert cuda.resolution_markers == ("sys_platform == 'linux'",) and cuda.sdist is None
    assert cuda.wheels == (LockedFile("wheel", cuda.urls[0], None, None, SHA, 123),)
    assert mac.files[0] == LockedFile("sdist", "https://files.pythonhosted.org/packages/torch-2.7.1.tar.gz",
                                      None, None, SHA, 9)
    assert mac.files[1].hash is None and mac.files[1].size is None
    local = lock.named("localpkg")[0]
    assert local.wheels[0].location == "localpkg-0.1-py3-none-any.whl" and local.urls == ()
    assert lock.named("urlpkg")[0].urls == ("https://example.com/urlpkg-2.0.tar.gz",)
    assert lock.named("gitpkg")[0].source_label() == "git:https://github.com/o/r?rev=main#abc"


def test_the_same_text_parsed_again_is_answered_from_the_last_parse_under_its_own_path() -> None:
    """A lock just made is read again after uv (compiled-package note, locks/README.md): ~0.1 s a parse of a
    260-package lock. Only the same text is answered from the last parse; any other text is parsed anew."""
    staged = parse_uv_lock(LOCK, "locks/.x.staging/x/uv.lock")
    final = parse_uv_lock(LOCK, "locks/x/uv.lock")
    assert final.packages is staged.packages and final.path == Path("locks/x/uv.lock")
    assert final == staged._replace(path=Path("locks/x/uv.lock"))
    edited = LOCK.replace('version = "2.7.1"', 'version = "2.7.2"')
    assert edited != LOCK
    other = parse_uv_lock(edited, "locks/x/uv.lock")
    assert other.packages is not final.packages and [p.version for p in other.named("torch")][-1] == "2.7.2"
    # README reads every profile's lock: another lock parsed in between does not push this one out
    assert parse_uv_lock(LOCK, "locks/x/uv.lock").packages is staged.packages
    with pytest.raises(LockIntegrityError):  # a broken text after a good one is still refused
        parse_uv_lock(LOCK + "\n[[package]]\nversion = 1\n", "locks/x/uv.lock")


def test_registries_are_listed_as_the_lock_spells_them() -> None:
    assert parse_uv_lock(LOCK, "uv.lock").registries() == {"https://download.pytorch.org/whl/cu126/",
                                                          "https://pypi.org/simple"}


def test_missing_lock_is_stale_and_a_corrupt_one_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(StaleLockError, match="cannot read .*uv.lock"):
        read_uv_lock(tmp_path / "uv.lock")
    (tmp_path / "uv.lock").write_text(LOCK[: len(LOCK) // 2] + "\n[[package]\n", encoding="utf-8")
    with pytest.raises(LockIntegrityError, match=r"uv\.lock: is not valid TOML") as caught:
        read_uv_lock(tmp_path / "uv.lock")
    assert caught.value.hint and "restore the committed uv.lock" in caught.value.hint
    (tmp_path / "uv.lock").write_bytes(b'version = 1\n# \xff\xfe\n')
    with pytest.raises(LockIntegrityError, match="not a UTF-8 text file"):
        read_uv_lock(tmp_path / "uv.lock")


@pytest.mark.parametrize(("edit", "message"), [
    ('wheels = "torch.whl"', "package torch 1.0: `wheels` is not an array"),
    ('wheels = ["torch.whl"]', "package torch 1.0: a wheel entry is 'torch.whl', not a table"),
    ('source = "pypi"', "package torch 1.0: `source` is 'pypi', not a table"),
    ('dependencies = [{ version = "1" }]', "package torch 1.0: a dependency is"),
    ('resolution-markers = "linux"', "`resolution-markers` is not an array"),
])
def test_a_hand_edit_that_breaks_the_shape_is_an_integrity_error(edit: str, message: str) -> None:
    text = f'version = 1\n\n[[package]]\nname = "torch"\nversion = "1.0"\n{edit}\n'
    with pytest.raises(LockIntegrityError, match=message.replace("[", r"\[").replace(".", r"\.")):
        parse_uv_lock(text, "locks/cu126/uv.lock")
    with pytest.raises(LockIntegrityError, match="a \\[\\[package\\]\\] entry has no name"):
        parse_uv_lock('[[package]]\nversion = "1"\n', "uv.lock")
    with pytest.raises(LockIntegrityError, match="`requires-python` is 3, not a string"):
        parse_uv_lock("requires-python = 3\n", "uv.lock")


@pytest.mark.parametrize("profile", sorted(p.parent.name for p in (ROOT / "locks").glob("*/uv.lock")))
def test_committed_locks_read_the_same_as_uv_wrote_them(profile: str) -> None:
    """The shipped locks: every [[package]] parsed, the root project found, the torch uv locked."""
    path = ROOT / "locks" / profile / "uv.lock"
    text = path.read_text(encoding="utf-8")
    lock = read_uv_lock(path)
    assert len(lock.packages) == text.count("\n[[package]]\n")
    assert count_locked_packages(text) == len(lock.packages) - 1 == sum(not p.is_root for p in lock.packages)
    assert [p.is_root for p in lock.packages].count(True) == 1
    from envbuild.torch.fitting import locked_torch_version

    torch = lock.named("torch")
    assert torch and locked_torch_version(LockFolder(ROOT / "locks", profile)) == torch[0].version
    assert all(first_locked_version(text, p.name) == lock.named(p.name)[0].version for p in lock.packages)
    assert first_locked_version(text, "not-locked") is None
    assert all(f.hash and f.hash.startswith("sha256:") for p in lock.packages for f in p.files)


def test_the_searches_agree_with_the_parse_on_a_forked_lock(tmp_path: Path) -> None:
    from envbuild.torch.fitting import locked_torch_version

    lock = parse_uv_lock(LOCK, "uv.lock")
    assert count_locked_packages(LOCK) == sum(not p.is_root for p in lock.packages) == 7
    assert first_locked_version(LOCK, "torch") == lock.named("torch")[0].version == "2.7.1+cu126"
    assert locked_torch_version(LockFolder(tmp_path, "cu126")) is None  # no lock: unknown
    assert count_locked_packages("") == 0


# --- the readers that used to search the text ------------------------------------------------------

def test_guard_reports_a_corrupt_lock_as_an_integrity_error_naming_it(tmp_path: Path) -> None:
    from envbuild.torch.catalogue import load_catalogue
    from envbuild.uv.guard import ensure_constraints

    (tmp_path / "uv.lock").write_text('[[package]]\nname = "torch"\nversion = \n', encoding="utf-8")
    with pytest.raises(LockIntegrityError, match=r"uv\.lock: is not valid TOML"):
        ensure_constraints(tmp_path, load_catalogue().get("cu126"))


def test_hash_mismatch_names_the_one_url_of_a_url_source() -> None:
    from envbuild.env.sync import _hash_mismatch

    uv_said = ("Hash mismatch for `urlpkg==2.0`\n\nExpected:\n  sha256:aa\n\nComputed:\n  sha256:bb\n")
    error = _hash_mismatch(UvError("uv sync", uv_said), LOCK, "the index")
    assert error is not None
    assert error.message.startswith("hash mismatch for urlpkg==2.0 from https://example.com/urlpkg-2.0.tar.gz: "
                                    "the lock says sha256:aa, the index served sha256:bb")
    several = _hash_mismatch(UvError("uv sync", uv_said.replace("urlpkg==2.0", "torch==2.7.1")), LOCK)
    assert several is not None and "torch==2.7.1: the lock says" in several.message  # two files: none named
    broken = _hash_mismatch(UvError("uv sync", uv_said), "[[package]\n")
    assert broken is not None and "urlpkg==2.0: the lock says" in broken.message


def test_doctor_lists_registries_of_the_lock_and_none_of_a_corrupt_one(tmp_path: Path) -> None:
    from envbuild.env.doctor import _lock_registries

    folder = LockFolder(tmp_path, "cu126")
    folder.path.mkdir()
    folder.uv_lock.write_text(LOCK, encoding="utf-8")
    assert _lock_registries(folder) == {"https://download.pytorch.org/whl/cu126/", "https://pypi.org/simple"}
    folder.uv_lock.write_text("[[package]\n", encoding="utf-8")
    assert _lock_registries(folder) == set()
