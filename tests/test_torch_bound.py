"""triton-windows declares no torch requirement, so uv takes its newest release: envbuild holds it at the
minor the locked torch needs (the table in envbuild/data/torch_bound.toml) and locks again, recording
the constraint so the pyproject stays reproducible; a recorded constraint it never writes is an edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envbuild.pkgs.uvlock import parse_uv_lock
from envbuild.torch.catalogue import load_catalogue
from envbuild.torch.torch_bound import bound_for, bound_rules, check_recorded, needed_bounds, unchecked
from tests.support.catalogue import Catalogue
from tests.support.deploy import locked_versions, make_deployment, run_cli
from tests.support.wheels import build_wheel


@pytest.fixture
def triton_pypi(index_server: Catalogue, tmp_path: Path) -> Catalogue:
    """triton-windows for torch 2.7 (3.3) and 2.8 (3.4), and a tool that needs it without a version."""
    out = tmp_path / "wheels"
    for version in ("3.3.1", "3.4.0"):
        index_server.pypi.add(build_wheel(out, "triton-windows", version, import_name="triton"))
    index_server.pypi.add(build_wheel(out, "wintool", "1.0", requires_dist=("triton-windows",)))
    return index_server


def test_triton_windows_is_held_at_the_minor_the_locked_torch_needs(
    triton_pypi: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    site.add_node("node_win", "wintool\n")
    folder = site.root / "locks/cu126"
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    locked = locked_versions(folder / "uv.lock")
    assert locked["torch"][0].startswith("2.7.") and locked["triton-windows"][0] == "3.3.1", locked
    assert "held triton-windows at 3.3 for torch 2.7 (uv took 3.4.0" in result.stdout, result
    pyproject = (folder / "pyproject.toml").read_text()
    assert 'constraint-dependencies = [\n    "triton-windows<3.4,>=3.3",\n]' in pyproject
    assert "# Held by envbuild (recorded in envbuild-lock.json): triton-windows>=3.3,<3.4" in pyproject
    path = folder / "envbuild-lock.json"
    assert json.loads(path.read_text())["bounds"] == {"triton-windows": ">=3.3,<3.4"}

    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check
    again = run_cli(["lock", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert again.returncode == 0 and "uv not run" in again.stdout, again

    data = json.loads(path.read_text())
    data["bounds"] = {"triton-windows": ">=9.0,<9.1"}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    edited = run_cli(["lock", "--check", "--profile", "cu126"], env=env, cwd=site.root)
    assert edited.returncode == 5 and "envbuild-lock.json bounds \"triton-windows\"" in edited.stderr, edited


def _lock(torch: str, triton: str | None) -> str:
    text = 'version = 1\nrevision = 3\nrequires-python = ">=3.10"\n\n'
    text += f'[[package]]\nname = "torch"\nversion = "{torch}"\nsource = {{ registry = "https://x/simple" }}\n\n'
    if triton:
        text += (f'[[package]]\nname = "triton-windows"\nversion = "{triton}"\n'
                 'source = { registry = "https://pypi.org/simple" }\n')
    return text


@pytest.mark.parametrize(("torch", "triton", "needed"), [
    ("2.7.1+cu126", "3.4.0", ">=3.3,<3.4"),
    ("2.7.1+cu126", "3.3.1.post19", None),
    ("2.10.0", "3.5.0", ">=3.6,<3.7"),
    ("2.5.1", "3.1.0", None),
    ("2.3.1", None, None),  # no triton-windows: nothing to check, whatever torch
])
def test_needed_bounds_follow_the_table(torch: str, triton: str | None, needed: str | None) -> None:
    found = needed_bounds(parse_uv_lock(_lock(torch, triton), "uv.lock"))
    assert [b.specifier for b in found] == ([needed] if needed else [])


def test_a_torch_minor_the_table_does_not_know_is_said_not_refused() -> None:
    """A torch newer than the table's source lists: nothing says which build fits, so uv's choice stands and
    every lock says it was not checked (a refusal would leave the node's users no way but to drop it)."""
    lock = parse_uv_lock(_lock("2.12.0", "3.8.0"), "uv.lock")
    assert needed_bounds(lock) == []
    (note,) = unchecked(lock)
    assert note.startswith("triton-windows 3.8.0 is locked with torch 2.12, which envbuild's table") and \
        "has no row for: not checked" in note, note
    assert unchecked(parse_uv_lock(_lock("2.7.1+cu126", "3.3.1"), "uv.lock")) == []


def test_the_table_has_its_source_and_recorded_bounds_are_checked() -> None:
    rule = {r.package: r for r in bound_rules()}["triton-windows"]
    assert rule.source.startswith("https://github.com/woct0rdho/triton-windows") and rule.minors["2.7"] == "3.3"
    assert bound_for("3.3") == ">=3.3,<3.4" and bound_for("3.10") == ">=3.10,<3.11"
    cu124 = load_catalogue().get("cu124")  # torch 2.4 to 2.6
    torch = next(p for p in cu124.packages if p.name == "torch")
    assert not torch.specifier.contains("2.7.0"), torch  # the premise of the cases below
    assert check_recorded({"triton-windows": ">=3.2,<3.3"}, cu124) == ({"triton-windows": ">=3.2,<3.3"}, ())
    for forged in ({"triton-windows": ">=3.3,<3.4"}, {"triton-windows": ">=3.2"}, {"numpy": "<2"}):
        usable, problems = check_recorded(forged, cu124)
        assert usable == {} and problems[0].startswith("envbuild-lock.json bounds"), forged


def test_the_audit_refuses_a_lock_that_pairs_triton_windows_with_another_torch() -> None:
    """A hand-made lock (fingerprint edited to match) is still not one envbuild writes."""
    from envbuild.torch.torch_bound import audit_problems

    assert audit_problems(parse_uv_lock(_lock("2.7.1+cu126", "3.3.1"), "uv.lock")) == []
    assert audit_problems(parse_uv_lock(_lock("2.7.1+cu126", "3.4.0"), "uv.lock")) == [
        "uv.lock holds triton-windows 3.4.0 with torch 2.7, which needs triton-windows 3.3 (envbuild never writes "
        "such a lock)"]
    assert audit_problems(parse_uv_lock(_lock("2.3.1", "3.1.0"), "uv.lock")) == []  # no row: said when locking
    from envbuild.uv.audit import audit_texts

    profile = load_catalogue().get("cpu")
    pyproject = '[project]\nname = "x"\nversion = "0"\ndependencies = ["torch"]\n'
    report = audit_texts(pyproject, _lock("2.7.1+cpu", "3.4.0"), profile, folder=Path("x"),
                         indexes=("https://download.pytorch.org/whl/cpu", None, "simple"))
    assert any(t.startswith("uv.lock holds triton-windows 3.4.0 with torch 2.7") for t in report.tampering), report
