"""Inputs written by someone else, to make envbuild leak, hang or fall over.

A custom node is third-party code: its requirement files must not be able to read the user's
files into the committed lock, commit credentials, stall a run or crash the parser. The corpus in
tests/bad_inputs/ has the plain-file cases; here are the ones that need a symlink, a FIFO, a
device, a huge file or a timing bound, and the parser-level checks behind them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from envbuild.core.errors import ConfigError, RequirementFileError
from envbuild.core.runner import redact
from envbuild.core.safeio import FileTooLargeError, NotARegularFileError, digest_regular_file, read_regular_file
from envbuild.core.tomlfile import load_toml
from envbuild.pkgs.lockdir import file_digest
from envbuild.pkgs.requirements import ParsedFile, parse_requirements_file, parse_requirements_text
from tests.support.deploy import Deployment, Result, make_deployment, run_cli

T = TypeVar("T")
POSIX_ONLY = pytest.mark.skipif(os.name == "nt", reason="FIFOs, /dev/zero and symlinks as a user makes them")
SECRET = "machine pypi.example.com login bob password hunter2-secret"
LOCK = ["lock", "--profile", "cu126"]
KINDS = {"fifo": "a FIFO (named pipe)", "dev-zero": "a character device"}
MAX_INCLUDE_DEPTH = 32  # the documented cap (envbuild.pkgs.requirements.MAX_INCLUDE_DEPTH)


def within(seconds: float, work: Callable[[], T]) -> T:
    """Run `work`, failing (not hanging) when it takes longer than `seconds`.

    Only for work that blocks outside the GIL (opening a FIFO): the daemon thread is abandoned on a
    hang, the failure is what matters. Anything that could spin in C goes through `in_child`."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    started = time.perf_counter()
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s"
    assert time.perf_counter() - started < seconds
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def in_child(code: str, timeout: float = 30) -> str:
    """Run `code` in a fresh interpreter and return what it printed.

    A regex stuck in C holds the GIL, so a thread cannot time it out; a child can be killed. Its
    memory is capped too, so reading a device without end fails there instead of on the machine."""
    prelude = ("import time\ntry:\n    import resource\n    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
               "except (ImportError, ValueError):\n    pass\n")
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def node_folder(tmp_path: Path, requirements: str) -> Path:
    node = tmp_path / "custom_nodes" / "evil"
    node.mkdir(parents=True)
    (node / "requirements.txt").write_text(requirements, encoding="utf-8")
    (tmp_path / "outside.txt").write_text(SECRET + "\n", encoding="utf-8")
    return node


def parse_node(node: Path, *, lenient: bool = True) -> ParsedFile:
    return parse_requirements_file(node / "requirements.txt", source="node evil", lenient=lenient,
                                   display_root=node.parent.parent, confine_to=node)


def assert_quotes_nothing_of(error: RequirementFileError, *private: str) -> None:
    for text in (SECRET, "hunter2", *private):
        assert text not in str(error), error


# --- 1. includes stay in the owner's folder ------------------------------------------------------


@pytest.mark.parametrize("lenient", [True, False])
@pytest.mark.parametrize("target", ["../../outside.txt", "{abs}", "~/.netrc", "link.txt", "sub/../../../outside.txt"])
def test_a_node_cannot_include_a_file_outside_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, lenient: bool
) -> None:
    secret = tmp_path / "outside.txt"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(SECRET + "\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    written = target.replace("{abs}", str(secret))
    node = node_folder(tmp_path, f"six\n-r {written}\n")
    (node / "sub").mkdir()
    if os.name != "nt":
        (node / "link.txt").symlink_to(secret)
    elif target == "link.txt":
        pytest.skip("symlinks need privileges on Windows")
    with pytest.raises(RequirementFileError) as caught:
        parse_node(node, lenient=lenient)
    error = caught.value
    assert (error.path, error.line) == ("custom_nodes/evil/requirements.txt", 2)
    assert f"cannot include `{written}`: it is outside the folder of node evil" in error.message
    assert error.hint is not None and "--exclude-node evil" in error.hint
    private = () if target == "{abs}" else (str(tmp_path),)  # an absolute include is shown as written
    assert_quotes_nothing_of(error, *private)


@POSIX_ONLY
def test_a_node_requirements_file_that_links_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    node = node_folder(tmp_path, "")
    (node / "requirements.txt").unlink()
    (node / "requirements.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(RequirementFileError, match="is a link to a file outside the folder of node evil") as caught:
        parse_node(node)
    assert_quotes_nothing_of(caught.value, str(tmp_path))


def test_includes_inside_the_folder_and_the_users_own_files_still_work(tmp_path: Path) -> None:
    node = node_folder(tmp_path, "six\n-r sub/more.txt\n")
    (node / "sub").mkdir()
    (node / "sub" / "more.txt").write_text("-c ../pins.txt\neinops\n", encoding="utf-8")
    (node / "pins.txt").write_text("six<2\n", encoding="utf-8")
    parsed = parse_node(node)
    assert [r.text for r in parsed.requirements] == ["six", "einops"]
    assert [c.text for c in parsed.constraints] == ["six<2"]
    # The user's own extra file is the user's choice: it may include anything (confine_to=None).
    extra = tmp_path / "mine" / "extra.txt"
    extra.parent.mkdir()
    extra.write_text("-r ../custom_nodes/evil/requirements.txt\n", encoding="utf-8")
    mine = parse_requirements_file(extra, source="extra", display_root=tmp_path)
    assert [r.text for r in mine.requirements] == ["six", "einops"]


def test_a_pyproject_dependency_cannot_include_outside_the_node(tmp_path: Path) -> None:
    """A node's [project].dependencies are read as requirement lines: `-r` there is confined too."""
    node = node_folder(tmp_path, "")
    with pytest.raises(RequirementFileError, match=r"`../../outside.txt`: it is outside") as caught:
        parse_requirements_text("six\n-r ../../outside.txt\n", path=node / "pyproject.toml", source="node evil",
                                lenient=True, display_root=tmp_path, confine_to=node)
    assert caught.value.line == 2
    assert_quotes_nothing_of(caught.value, str(tmp_path))


# --- 2. credentials in requirement URLs ------------------------------------------------------------


@pytest.mark.parametrize("lenient", [True, False])
@pytest.mark.parametrize("line", [
    "einops @ http://bob:s3cr3t@host.example/einops-0.8.0-py3-none-any.whl",
    "https://bob:s3cr3t@host.example/einops-0.8.0-py3-none-any.whl",
    "einops @ git+https://s3cr3t@host.example/einops.git",
    "git+https://s3cr3t@host.example/einops.git#egg=einops",
    "einops @ git+ssh://git:s3cr3t@host.example/einops.git",
])
def test_a_url_with_credentials_is_an_error_even_in_a_node(tmp_path: Path, line: str, lenient: bool) -> None:
    with pytest.raises(RequirementFileError) as caught:
        parse_requirements_text(f"six\n{line}\n", path=tmp_path / "requirements.txt", source="node evil",
                                lenient=lenient, display_root=tmp_path)
    error = caught.value
    assert error.line == 2 and "carries credentials" in error.message and "***@host.example" in error.message
    assert error.hint is not None and "~/.netrc" in error.hint
    assert "s3cr3t" not in str(error)


def test_an_ssh_account_name_is_not_a_credential(tmp_path: Path) -> None:
    parsed = parse_requirements_text("einops @ git+ssh://git@github.com/arogozhnikov/einops.git\n",
                                     path=tmp_path / "requirements.txt", source="node evil", lenient=True)
    assert parsed.requirements[0].requirement.url == "git+ssh://git@github.com/arogozhnikov/einops.git"
    assert parsed.warnings == ()


# --- 3. time and memory ----------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [
    '"a" * 10_000_000',  # the old scheme pattern rescanned every run of letters: 40 KB took 20 s
    '"a://" + "x:" * 5_000_000',
    '("h://" + "u" * 1000 + " ") * 10_000',
])
def test_redact_is_linear(junk: str) -> None:
    took, unchanged = in_child(f"""
        from envbuild.core.runner import redact
        junk = {junk}
        start = time.perf_counter()
        unchanged = redact(junk) == junk
        print(time.perf_counter() - start, unchanged)
    """).split()
    assert float(took) < 2.0 and unchanged == "True"


def test_redact_still_hides_credentials() -> None:
    assert redact("x https://bob:s3cr3t@h/p git+https://tok@h/r ssh://git@h") == \
        "x https://***@h/p git+https://***@h/r ssh://***@h"


def test_a_10_mb_junk_line_is_handled_in_well_under_a_second(tmp_path: Path) -> None:
    took, texts, line, length = in_child(f"""
        from pathlib import Path
        from envbuild.pkgs.requirements import parse_requirements_text
        text = "six\\n" + "x" * 5_000_000 + "://" + "y" * 5_000_000 + "\\n"
        start = time.perf_counter()
        parsed = parse_requirements_text(text, path=Path({str(tmp_path / "r.txt")!r}), source="node evil",
                                         lenient=True)
        took = time.perf_counter() - start
        (warning,) = parsed.warnings
        print(took, ",".join(r.text for r in parsed.requirements), warning.origin.line, len(warning.message))
    """).split()
    assert float(took) < 1.0
    assert (texts, line) == ("six", "2") and int(length) < 1000  # quoted, cut at 200 characters


def test_a_requirements_file_over_1_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    node = node_folder(tmp_path, "# padding\n" * 110_000)
    with pytest.raises(RequirementFileError, match="is larger than 1 MiB") as caught:
        parse_node(node)
    assert caught.value.hint is not None and "--exclude-node evil" in caught.value.hint


@POSIX_ONLY
@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    node = node_folder(tmp_path, "")
    target = node / "requirements.txt"
    target.unlink()
    if kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/zero")
    # Parsed unconfined, as the user's own file would be: the regular-file check alone must stop it.
    output = in_child(f"""
        from pathlib import Path
        from envbuild.core.errors import EnvbuildError
        from envbuild.pkgs.lockdir import file_digest
        from envbuild.pkgs.requirements import parse_requirements_file
        from envbuild.core.tomlfile import load_toml
        target = Path({str(target)!r})
        for read in (lambda: parse_requirements_file(target, source="x", display_root=target.parent.parent),
                     lambda: load_toml(target)):
            try:
                read()
            except EnvbuildError as exc:
                print(exc.message)
        print("digest", file_digest(target))
    """).splitlines()
    assert output == [f"evil/requirements.txt: is {KINDS[kind]}, not a regular file: envbuild reads "
                      "requirements only from regular files of at most 1 MiB",
                      f"{target}: is {KINDS[kind]}, not a regular file: envbuild reads TOML only from "
                      "regular files of at most 4 MiB",
                      "digest None"]


def test_safeio_caps_and_digests(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"12345")
    with big.open("wb") as handle:  # sparse: a huge file costs no disk
        handle.truncate(200 * 1024 * 1024)
    assert read_regular_file(small, 5) == b"12345"
    with pytest.raises(FileTooLargeError):
        read_regular_file(small, 4)
    with pytest.raises(IsADirectoryError):
        read_regular_file(tmp_path, 100)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path / "missing", 100)
    assert digest_regular_file(small, 5) == "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
    assert digest_regular_file(small, 4) is None
    assert within(1.0, lambda: file_digest(big)) is None  # refused by size, never read
    assert file_digest(tmp_path / "no\x00such") is None
    if os.name != "nt":
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(NotARegularFileError, match="FIFO"):
            within(5.0, lambda: read_regular_file(tmp_path / "fifo", 100))


def test_a_toml_file_over_its_cap_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "pyproject.toml"
    huge.write_text("# padding\n" * 500_000, encoding="utf-8")
    with pytest.raises(ConfigError, match="is larger than 4 MiB"):
        load_toml(huge)


# --- 4. and 5. nesting and control characters ----------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_INCLUDE_DEPTH + 1, 600])
def test_a_deep_include_chain_is_an_error_naming_the_line(tmp_path: Path, depth: int) -> None:
    for index in range(depth):
        (tmp_path / f"r{index}.txt").write_text(f"six\n-r r{index + 1}.txt\n", encoding="utf-8")
    (tmp_path / f"r{depth}.txt").write_text("einops\n", encoding="utf-8")
    with pytest.raises(RequirementFileError, match="nested more than 32 deep") as caught:
        parse_requirements_file(tmp_path / "r0.txt", source="extra", display_root=tmp_path)
    assert (caught.value.path, caught.value.line) == (f"r{MAX_INCLUDE_DEPTH - 1}.txt", 2)


def test_an_include_chain_up_to_the_cap_is_read(tmp_path: Path) -> None:
    last = MAX_INCLUDE_DEPTH - 1
    for index in range(last):
        (tmp_path / f"r{index}.txt").write_text(f"-r r{index + 1}.txt\n", encoding="utf-8")
    (tmp_path / f"r{last}.txt").write_text("einops\n", encoding="utf-8")
    parsed = parse_requirements_file(tmp_path / "r0.txt", source="extra", display_root=tmp_path)
    assert [r.text for r in parsed.requirements] == ["einops"] and len(parsed.files) == MAX_INCLUDE_DEPTH


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1b", "\x7f", "\x9b"])
def test_a_control_character_in_an_include_path_names_the_line(tmp_path: Path, char: str) -> None:
    with pytest.raises(RequirementFileError, match="without control characters") as caught:
        parse_requirements_text(f"six\n-r a{char}b.txt\n", path=tmp_path / "r.txt", source="node evil",
                                lenient=True, display_root=tmp_path)
    assert (caught.value.path, caught.value.line) == ("r.txt", 2)
    assert char not in str(caught.value)  # shown escaped, never sent to the terminal


# --- through the CLI -------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Deployment:
    deployment = make_deployment(tmp_path / "site")
    (tmp_path / "outside.txt").write_text(SECRET + "\n", encoding="utf-8")
    return deployment


def assert_refused(result: Result, site: Deployment, *expected: str) -> None:
    assert result.returncode == 2, result
    for text in expected:
        assert text in result.stderr, f"stderr lacks {text!r}\n{result!r}"
    assert "hunter2" not in result.output and "s3cr3t" not in result.output, result
    assert "Traceback" not in result.output and "internal error" not in result.output, result
    assert not site.locks.exists(), "nothing may be written"


@pytest.mark.parametrize("target", ["../../../../outside.txt", "~/.netrc", "link.txt"])
def test_cli_a_node_including_a_private_file_stops_the_lock(
    site: Deployment, uv_env: dict[str, str], tmp_path: Path, target: str
) -> None:
    if target == "link.txt" and os.name == "nt":
        pytest.skip("symlinks need privileges on Windows")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text(SECRET + "\n", encoding="utf-8")
    node = site.add_node("evil", f"six\n-r {target}\n")
    if target == "link.txt":
        (node / "link.txt").symlink_to(tmp_path / "outside.txt")
    result = run_cli(LOCK, env={**uv_env, "HOME": str(home), "USERPROFILE": str(home)}, cwd=site.root, timeout=60)
    assert_refused(result, site, "data/custom_nodes/evil/requirements.txt:2", f"`{target}`",
                   "outside the folder of node evil", "--exclude-node evil")
    assert str(tmp_path) not in result.output


def test_cli_comfyui_cannot_include_outside_its_checkout(site: Deployment, uv_env: dict[str, str]) -> None:
    requirements = site.comfyui / "requirements.txt"
    requirements.write_text(requirements.read_text() + "-c ../../outside.txt\n", encoding="utf-8")
    result = run_cli(LOCK, env=uv_env, cwd=site.root, timeout=60)
    assert_refused(result, site, "ComfyUI/requirements.txt:9", "outside the folder of ComfyUI")


@pytest.mark.parametrize("line", ["einops @ http://bob:s3cr3t@127.0.0.1:9/einops-0.8.0-py3-none-any.whl",
                                  "git+https://s3cr3t@127.0.0.1:9/einops.git#egg=einops"])
def test_cli_a_node_url_with_credentials_stops_the_lock(site: Deployment, uv_env: dict[str, str], line: str) -> None:
    site.add_node("evil", f"six\n{line}\n")
    result = run_cli(LOCK, env=uv_env, cwd=site.root, timeout=60)
    assert_refused(result, site, "data/custom_nodes/evil/requirements.txt:2", "://***@127.0.0.1:9/", "~/.netrc")


@POSIX_ONLY
@pytest.mark.parametrize("kind", ["fifo", "10-mb-line", "600-deep"])
def test_cli_a_node_file_that_would_hang_or_crash_is_refused_quickly(
    site: Deployment, uv_env: dict[str, str], kind: str
) -> None:
    node = site.add_node("evil", "six\n")
    target = node / "requirements.txt"
    if kind == "fifo":
        target.unlink()
        os.mkfifo(target)
        expected = "requirements.txt: is a FIFO (named pipe), not a regular file"
    elif kind == "10-mb-line":
        target.write_text("six\n" + "a" * 10_000_000 + "\n", encoding="utf-8")
        expected = "requirements.txt: is larger than 1 MiB"
    else:
        for index in range(600):
            (node / f"r{index}.txt").write_text(f"-r r{index + 1}.txt\n", encoding="utf-8")
        (node / "r600.txt").write_text("six\n", encoding="utf-8")
        target.write_text("-r r0.txt\n", encoding="utf-8")
        expected = "r30.txt:1: cannot include `r31.txt`: includes are nested more than 32 deep"
    result = run_cli(LOCK, env=uv_env, cwd=site.root, timeout=30)
    assert_refused(result, site, "data/custom_nodes/evil/", expected, "--exclude-node evil")


@POSIX_ONLY
def test_cli_an_extra_requirements_link_to_dev_zero_is_refused(site: Deployment, uv_env: dict[str, str]) -> None:
    """The user's own files are not confined, so only the regular-file check stands between them and a device."""
    (site.root / "zero.txt").symlink_to("/dev/zero")
    result = run_cli([*LOCK, "--extra-requirements", "zero.txt"], env=uv_env, cwd=site.root, timeout=30)
    assert_refused(result, site, "is a character device, not a regular file")


@POSIX_ONLY
def test_cli_a_hostile_path_in_the_committed_fingerprint_neither_hangs_nor_reads_a_device(
    site: Deployment, uv_env: dict[str, str], tmp_path: Path
) -> None:
    """`raw_inputs` comes from a committed file: a FIFO or /dev/zero there reads as "changed"."""
    assert run_cli(LOCK, env=uv_env, cwd=site.root).returncode == 0
    os.mkfifo(tmp_path / "fifo")
    fingerprint = site.locks / "cu126" / "envbuild-lock.json"
    data = json.loads(fingerprint.read_text(encoding="utf-8"))
    data["raw_inputs"] = {str(tmp_path / "fifo"): "0" * 64, "/dev/zero": "0" * 64, **data["raw_inputs"]}
    fingerprint.write_text(json.dumps(data), encoding="utf-8")
    result = run_cli(["lock", "--check", "--profile", "cu126"], env=uv_env, cwd=site.root, timeout=30)
    # Within the timeout (a read of /dev/zero or an open of the FIFO never ends), and the verdict comes from
    # the inputs themselves: the forged entries are only "changed" hints, the merged inputs are the same.
    assert result.returncode == 0 and "cu126: current" in result.stdout, result
