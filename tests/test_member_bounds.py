"""A settled variant group keeps the bounds the dependencies put on any of its members: the member kept is
asked for with their intersection (read from each asker's metadata on its index), a disjoint set is refused
before the second lock naming each asker, and metadata that cannot be read is said, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

from envbuild.core.http.errors import IndexReadError
from envbuild.lock.settlements import with_settlements
from envbuild.pkgs.merging import merge
from envbuild.pkgs.requirements import Origin, SourcedRequirement
from envbuild.pkgs.uvlock import Dependency, LockedPackage
from envbuild.torch.member_bounds import extras, member_lines, read_bounds
from tests.support.catalogue import Catalogue
from tests.support.deploy import Deployment, locked_versions, make_deployment, run_cli
from tests.support.wheels import build_wheel

CV2 = frozenset({"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"})


def _publish(index_server: Catalogue, tmp_path: Path, headtool_asks: str) -> None:
    """opencv-python 4.9, its headless build 4.7 and 4.9; cvtool asks opencv-python>=4.8, headtool asks
    `headtool_asks` (each brought by one node, neither node asking for a cv2 build itself)."""
    out = tmp_path / "wheels"
    index_server.pypi.add(build_wheel(out, "opencv-python", "4.9.0.80", import_name="cv2"))
    for version in ("4.7.0.72", "4.9.0.80"):
        index_server.pypi.add(build_wheel(out, "opencv-python-headless", version, import_name="cv2"))
    index_server.pypi.add(build_wheel(out, "cvtool", "1.0", requires_dist=(
        "opencv-python>=4.8", 'opencv-python<4; extra == "legacy"')))
    index_server.pypi.add(build_wheel(out, "headtool", "1.0", requires_dist=(headtool_asks,)))


def _site(tmp_path: Path) -> Deployment:
    site = make_deployment(tmp_path / "site", profiles=("cu126",))
    site.add_node("node_tool", "cvtool\n")
    site.add_node("node_head", "headtool\n")
    return site


def test_the_member_kept_carries_every_dependencys_bound_on_any_member(
    index_server: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    _publish(index_server, tmp_path, "opencv-python-headless")
    site = _site(tmp_path)
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 0, result
    assert ("settled the `cv2` module: kept opencv-python-headless>=4.8 (ComfyUI has no GUI" in result.stdout
            and "bounds from cvtool 1.0 → opencv-python>=4.8)" in result.stdout), result.stdout  # not the extra's
    folder = site.root / "locks/cu126"
    locked = locked_versions(folder / "uv.lock")
    assert locked["opencv-python-headless"][0] == "4.9.0.80" and "opencv-python" not in locked
    assert '"opencv-python-headless>=4.8",' in (folder / "pyproject.toml").read_text()
    assert json.loads((folder / "envbuild-lock.json").read_text())["settled"] == {"cv2": "opencv-python-headless>=4.8"}
    # Read through PEP 658 metadata, not the wheels.
    assert ("GET", "/simple/files/cvtool-1.0-py3-none-any.whl.metadata") in index_server.server.requests

    index_server.server.clear_log()  # a re-lock keeps the record: nothing read again
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))
    again = run_cli(["lock", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert again.returncode == 0 and "uv not run" in again.stdout, again
    check = run_cli(["lock", "--check", "--profile", "cu126"], env=fresh, cwd=site.root)
    assert check.returncode == 0 and "cu126: current" in check.stdout, check
    assert not [r for r in index_server.server.requests if r.path.endswith(".metadata")]


def test_bounds_no_version_meets_are_refused_before_a_second_lock_naming_each_asker(
    index_server: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    _publish(index_server, tmp_path, "opencv-python-headless<4.8")
    site = _site(tmp_path)
    result = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)
    assert result.returncode == 2, result
    assert "conflicting requirements for the `cv2` module" in result.stderr, result.stderr
    assert "cvtool 1.0 → opencv-python>=4.8 (through node node_tool → cvtool)" in result.stderr, result.stderr
    assert "headtool 1.0 → opencv-python-headless<4.8 (through node node_head → headtool)" in result.stderr
    assert not (site.root / "locks/cu126/uv.lock").exists()  # no half lock


def test_an_asker_whose_metadata_cannot_be_read_is_said_and_the_lock_still_made(
    index_server: Catalogue, env: dict[str, str], tmp_path: Path
) -> None:
    _publish(index_server, tmp_path, "opencv-python-headless<5")
    index_server.pypi.file_cache_control = "max-age=365000000, immutable, public"  # as PyPI's file host
    site = _site(tmp_path)
    first = run_cli(["lock", "--profile", "cu126"], env=env, cwd=site.root)  # uv's own cache has the metadata now
    assert first.returncode == 0 and "kept opencv-python-headless<5,>=4.8" in first.stdout, first
    index_server.server.fail("/simple/files/cvtool-1.0-py3-none-any.whl.metadata")
    fresh = dict(env, ENVBUILD_CACHE_DIR=str(tmp_path / "another-cache"))  # envbuild's has not
    result = run_cli(["lock", "--profile", "cu126", "--upgrade"], env=fresh, cwd=site.root)  # re-reads
    assert result.returncode == 0, result
    assert ("kept opencv-python-headless<5 (ComfyUI has no GUI" in result.stdout
            and "bounds from headtool 1.0 → opencv-python-headless<5; bounds not read from cvtool 1.0 (" in result.stdout
            and "cvtool-1.0-py3-none-any.whl.metadata: HTTP 500" in result.stdout), result.stdout
    recorded = json.loads((site.root / "locks/cu126/envbuild-lock.json").read_text())
    assert recorded["settled"] == {"cv2": "opencv-python-headless<5"}


# -- which lines count (no index) ----------------------------------------------------------------------

def test_a_line_under_an_extra_counts_only_when_the_lock_installs_that_extra() -> None:
    lines = ["opencv-python>=4.8", 'opencv-python-headless<5; extra == "gui"', "numpy>=1",
             'opencv-contrib-python!=4.9.1; sys_platform == "win32"', "opencv-python @ https://example.invalid/x.whl"]
    plain = LockedPackage("tool", "1.0", {"registry": "https://pypi.org/simple"},
                          dependencies=(Dependency("opencv-python"),))
    assert [str(r) for r in member_lines(lines, CV2, extras(plain))] == [
        "opencv-python>=4.8", 'opencv-contrib-python!=4.9.1; sys_platform == "win32"']
    gui = plain._replace(dependencies=(*plain.dependencies, Dependency("opencv-python-headless", group="extra:gui")))
    assert extras(gui) == {"gui"}
    assert len(member_lines(lines, CV2, extras(gui))) == 3


def test_a_settled_requirement_renders_with_its_bounds() -> None:
    from packaging.requirements import Requirement

    merged = merge([SourcedRequirement(Requirement("numpy"), Origin("x.txt", 1, "node x"), "numpy")])
    settled = with_settlements(merged, {"cv2": "opencv-python-headless<5,>=4.8"}, "locks/cu126/envbuild-lock.json")
    assert [r.pep508() for r in settled.requirements] == ["numpy", "opencv-python-headless<5,>=4.8"]


class _NoIndex:
    """An index client that must not be asked: a package from a path is read from no index."""

    def map(self, func, items):  # type: ignore[no-untyped-def]
        found = []
        for item in items:
            try:
                found.append(func(item))
            except IndexReadError as exc:
                found.append(exc)
        return found

    def project_page(self, *args: object) -> None:
        raise AssertionError("no index holds a path source")


def test_an_asker_from_a_path_is_named_as_not_read() -> None:
    from envbuild.pkgs.uvlock import LockFile

    local = LockedPackage("cvtool", "1.0", {"path": "wheels/cvtool-1.0-py3-none-any.whl"},
                          dependencies=(Dependency("opencv-python"),))
    lock = LockFile(Path("uv.lock"), (LockedPackage("project", "0", {"virtual": "."}), local,
                                      LockedPackage("opencv-python", "4.9", {"registry": "https://pypi.org/simple"})))
    bounds = read_bounds(_NoIndex(), lock, CV2)  # type: ignore[arg-type]
    assert bounds.asked == ()
    assert bounds.unread == ("cvtool 1.0 (a path source, not an index: its metadata is not read)",)
    assert bounds.requirement("opencv-python-headless") == "opencv-python-headless"
