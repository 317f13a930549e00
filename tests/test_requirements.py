"""Tests for envbuild.pkgs.requirements: parsing with provenance, merging, satisfiability."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from envbuild.core.errors import ConflictError, RequirementFileError
from envbuild.pkgs.merging import MergedRequirement, merge, specifiers_satisfiable
from envbuild.pkgs.requirements import (
    Diagnostic,
    Origin,
    ParsedFile,
    SourcedRequirement,
    parse_requirements_file,
    parse_requirements_text,
)

TESTS = Path(__file__).parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
DATA = TESTS / "data" / "requirements"
NODES = sorted(p.name for p in (FIXTURES / "nodes").iterdir() if p.is_dir())
WAS = "was-node-suite-comfyui"


def fixture(rel: str, source: str, *, lenient: bool = False) -> ParsedFile:
    path = FIXTURES / rel
    return parse_requirements_file(path, source=source, lenient=lenient, display_root=REPO)


def node(name: str) -> ParsedFile:
    return fixture(f"nodes/{name}/requirements.txt", f"node {name}", lenient=True)


def comfyui() -> ParsedFile:
    return fixture("comfyui/requirements.txt", "ComfyUI")


def manager() -> ParsedFile:
    return fixture("manager/requirements.txt", "ComfyUI-Manager")


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8", newline="")


def parse(tmp_path: Path, text: str, *, lenient: bool = False, source: str = "extra") -> ParsedFile:
    return parse_requirements_text(text, path=tmp_path / "requirements.txt", source=source,
                                   lenient=lenient, display_root=tmp_path)


def sourced(
    text: str, source: str = "extra", path: str = "r.txt", line: int = 1
) -> SourcedRequirement:
    return SourcedRequirement(Requirement(text), Origin(path, line, source), text)


def texts(parsed: ParsedFile) -> list[str]:
    return [str(r.requirement) for r in parsed.requirements]


def rendered(result_items: tuple[MergedRequirement, ...]) -> list[str]:
    return [m.pep508() for m in result_items]


# --- the real fixture files ---------------------------------------------------------------


def test_comfyui_requirements_all_parse_strictly() -> None:
    parsed = comfyui()
    assert len(parsed.requirements) == 34
    assert parsed.warnings == ()
    assert parsed.files == (FIXTURES / "comfyui/requirements.txt",)
    first, last = parsed.requirements[0], parsed.requirements[-1]
    assert str(first.origin) == "tests/fixtures/comfyui/requirements.txt:1 (ComfyUI)"
    assert first.text == "comfyui-frontend-package==1.53.6"
    assert (last.text, last.origin.line) == ("comfy-angle", 36)


def test_manager_requirements_parse_strictly() -> None:
    parsed = manager()
    assert len(parsed.requirements) == 12
    assert parsed.warnings == ()
    assert parsed.requirements[5].text == "huggingface-hub==0.36.0"


@pytest.mark.parametrize("name", NODES)
def test_every_node_file_parses_leniently(name: str) -> None:
    parsed = node(name)
    assert parsed.requirements
    assert {r.origin.source for r in parsed.requirements} == {f"node {name}"}
    if name != WAS:
        assert parsed.warnings == ()


def test_last_line_without_newline_is_kept() -> None:
    last = node("ComfyUI-KJNodes").requirements[-1]
    assert (last.text, last.origin.line) == ("huggingface_hub", 7)


def test_was_node_suite_strict_stops_at_first_bad_line() -> None:
    with pytest.raises(RequirementFileError) as caught:
        fixture(f"nodes/{WAS}/requirements.txt", f"node {WAS}")
    assert caught.value.line == 3
    assert "requirements.txt:3:" in str(caught.value)
    assert "NAME @ git+https://github.com/WASasquatch/img2texture.git" in str(caught.value.hint)


def test_was_node_suite_strict_names_the_invalid_numpy_line() -> None:
    path = FIXTURES / "nodes" / WAS / "requirements.txt"
    text = path.read_text().replace("git+https://github.com/WASasquatch/img2texture.git", "# url")
    with pytest.raises(RequirementFileError) as caught:
        parse_requirements_text(text, path=path, source=f"node {WAS}", display_root=REPO)
    error = caught.value
    assert error.line == 9
    where = f"tests/fixtures/nodes/{WAS}/requirements.txt:9"
    assert str(error).startswith(f"{where}: `numpy<1.24>=1.18`: not a valid requirement")
    assert error.hint == "did you mean `numpy>=1.18,<1.24`?"


def test_was_node_suite_lenient_reports_both_bad_lines() -> None:
    parsed = node(WAS)
    assert [w.origin.line for w in parsed.warnings] == [3, 9]
    assert all(w.origin.source == f"node {WAS}" for w in parsed.warnings)
    url, numpy = parsed.warnings
    assert str(numpy.origin) == f"tests/fixtures/nodes/{WAS}/requirements.txt:9 (node {WAS})"
    assert "numpy<1.24>=1.18" in numpy.message and "numpy>=1.18,<1.24" in numpy.message
    assert "img2texture" in url.message and "NAME @" in url.message
    assert len(parsed.requirements) == 15
    assert "numpy" not in {r.requirement.name for r in parsed.requirements}


# --- merging the real files ----------------------------------------------------------------


def test_comfyui_and_was_conflict_on_transformers() -> None:
    with pytest.raises(ConflictError) as caught:
        merge([*comfyui().requirements, *node(WAS).requirements])
    error = caught.value
    assert error.package == "transformers"
    assert error.details == (
        "transformers>=4.50.3 from tests/fixtures/comfyui/requirements.txt:9 (ComfyUI)",
        f"transformers==4.26.1 from tests/fixtures/nodes/{WAS}/requirements.txt:17 (node {WAS})",
    )
    assert error.hint == (f"relax one of them, or leave the node out of the lock with `envbuild lock --exclude-node "
                          f'{WAS}` (or [nodes] exclude = ["{WAS}"] in envbuild.toml); ComfyUI still loads its folder: '
                          "disable it (rename it to NAME.disabled) or remove it")


def test_comfyui_numpy_and_gguf_cap_merge() -> None:
    result = merge([*comfyui().requirements, *node("ComfyUI-GGUF").requirements])
    (numpy,) = [m for m in result.requirements if m.name == "numpy"]
    assert numpy.pep508() == "numpy<2.0.0,>=1.25.0"
    assert [str(o.origin) for o in numpy.origins] == [
        "tests/fixtures/comfyui/requirements.txt:7 (ComfyUI)",
        "tests/fixtures/nodes/ComfyUI-GGUF/requirements.txt:2 (node ComfyUI-GGUF)",
    ]


def test_everything_but_was_merges() -> None:
    parts = [comfyui(), manager(), *(node(n) for n in NODES if n != WAS)]
    result = merge(r for p in parts for r in p.requirements)
    names = result.names()
    assert {"torch", "numpy", "transformers", "pillow", "opencv-python"} <= names
    assert "opencv-python-headless" in names  # a different distribution, kept apart
    assert "huggingface-hub" in names and "huggingface_hub" not in names
    by_name = {m.name: m for m in result.requirements}
    assert by_name["pillow"].pep508() == "pillow>=10.3.0"
    assert by_name["trimesh"].pep508() == "trimesh[easy]"
    assert len(by_name["scipy"].origins) == 3
    assert [m.name for m in result.requirements] == sorted(m.name for m in result.requirements)


def test_everything_including_was_stops_only_at_transformers() -> None:
    parts = [comfyui(), manager(), *(node(n) for n in NODES)]
    with pytest.raises(ConflictError) as caught:
        merge(r for p in parts for r in p.requirements)
    assert caught.value.package == "transformers"


# --- includes --------------------------------------------------------------------------------


def test_nested_includes_keep_their_own_provenance() -> None:
    root = DATA / "app/requirements.txt"
    parsed = parse_requirements_file(root, source="extra", display_root=DATA)
    assert [(r.text, str(r.origin)) for r in parsed.requirements] == [
        ("pillow", "app/shared.txt:1 (extra)"),
        ("numpy>=1.25", "app/common/base.txt:2 (extra)"),
        ("requests>=2", "app/requirements.txt:4 (extra)"),
    ]
    assert [(r.text, str(r.origin)) for r in parsed.constraints] == [
        ("numpy<2", "app/constraints.txt:1 (extra)"),
        ("pillow<12", "app/constraints-extra.txt:1 (extra)"),
    ]
    assert [p.relative_to(DATA).as_posix() for p in parsed.files] == [
        "app/requirements.txt", "app/common/base.txt", "app/shared.txt",
        "app/constraints.txt", "app/constraints-extra.txt",
    ]


def test_include_cycle_names_the_chain_at_the_closing_line() -> None:
    with pytest.raises(RequirementFileError) as caught:
        parse_requirements_file(DATA / "cycle/a.txt", source="x", lenient=True, display_root=DATA)
    assert caught.value.line == 3
    chain = "cycle/a.txt -> cycle/b.txt -> cycle/a.txt"
    assert str(caught.value).startswith(f"cycle/b.txt:3: include cycle: {chain}")


def test_self_include_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, {"requirements.txt": "-r requirements.txt\n"})
    with pytest.raises(RequirementFileError, match="include cycle"):
        parse_requirements_file(tmp_path / "requirements.txt", source="extra")


@pytest.mark.parametrize("lenient", [False, True])
def test_missing_include_fails_at_the_including_line(tmp_path: Path, lenient: bool) -> None:
    with pytest.raises(RequirementFileError) as caught:
        parse(tmp_path, "numpy\n\n-c nothere.txt\n", lenient=lenient)
    assert caught.value.line == 3
    assert "requirements.txt:3: included file `nothere.txt` does not exist" in str(caught.value)


@pytest.mark.parametrize("form", ["-r base.txt", "-rbase.txt", "--requirement base.txt",
                                  "--requirement=base.txt", "-r 'base.txt'"])
def test_include_spellings(tmp_path: Path, form: str) -> None:
    write(tmp_path, {"base.txt": "numpy\n"})
    assert texts(parse(tmp_path, form + "\n")) == ["numpy"]


def test_file_included_twice_is_read_once(tmp_path: Path) -> None:
    write(tmp_path, {"a.txt": "-r d.txt\n", "b.txt": "-r d.txt\n", "d.txt": "numpy\n"})
    parsed = parse(tmp_path, "-r a.txt\n-r b.txt\n-r d.txt\n")
    assert texts(parsed) == ["numpy"]
    assert [p.name for p in parsed.files] == ["requirements.txt", "a.txt", "d.txt", "b.txt"]


def test_requirements_inside_a_constraints_file_stay_constraints(tmp_path: Path) -> None:
    write(tmp_path, {"c.txt": "numpy<2\n-r more.txt\n", "more.txt": "torch<3\n"})
    parsed = parse(tmp_path, "numpy\n-c c.txt\n")
    assert texts(parsed) == ["numpy"]
    assert [c.text for c in parsed.constraints] == ["numpy<2", "torch<3"]


def test_include_from_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RequirementFileError, match="only local files"):
        parse(tmp_path, "-r https://example.com/requirements.txt\n", lenient=True)


# --- line syntax -------------------------------------------------------------------------------


def test_continuations_report_the_first_line(tmp_path: Path) -> None:
    parsed = parse(tmp_path, "numpy\\\n  >=1.25 \\\n  ,<2\nscipy\ntail \\")
    assert [(str(r.requirement), r.origin.line) for r in parsed.requirements] == [
        ("numpy<2,>=1.25", 1), ("scipy", 4), ("tail", 5),
    ]


def test_comments_and_url_fragments(tmp_path: Path) -> None:
    text = (
        "# heading\n"
        "numpy  # pinned elsewhere\n"
        "\tscipy\t# tab comment\n"
        "whl @ https://x.org/whl-1.0-py3-none-any.whl#sha256=abc\n"
        "git+https://github.com/a/b.git#egg=bee&subdirectory=py\n"
        "   # indented comment \\\n"
        "tqdm\n"
    )
    parsed = parse(tmp_path, text)
    names = [r.requirement.name for r in parsed.requirements]
    assert names == ["numpy", "scipy", "whl", "bee", "tqdm"]
    wheel = "https://x.org/whl-1.0-py3-none-any.whl#sha256=abc"
    assert parsed.requirements[2].requirement.url == wheel
    bee = parsed.requirements[3]
    assert bee.requirement.url == "git+https://github.com/a/b.git#egg=bee&subdirectory=py"
    assert bee.text == "git+https://github.com/a/b.git#egg=bee&subdirectory=py"
    assert parsed.requirements[-1].origin.line == 7


def test_crlf_bom_and_empty_files(tmp_path: Path) -> None:
    write(tmp_path, {"crlf.txt": b"\xef\xbb\xbfnumpy\r\n\r\nscipy\r\n", "empty.txt": b"",
                     "blank.txt": "\n  \n# only a comment\n"})
    crlf = parse_requirements_file(tmp_path / "crlf.txt", source="extra")
    assert [(r.text, r.origin.line) for r in crlf.requirements] == [("numpy", 1), ("scipy", 3)]
    for name in ("empty.txt", "blank.txt"):
        parsed = parse_requirements_file(tmp_path / name, source="extra")
        assert (parsed.requirements, parsed.constraints, parsed.warnings) == ((), (), ())


@pytest.mark.parametrize(("content", "line"), [
    (b"numpy\x00\n", 1), (b"\xff\xfenumpy\n", None), (b"\x89PNG\r\n\x1a\n\x00\x00", None),
    (b"numpy\r\n-r inc\x00.txt\n", 2),  # a NUL smuggled into an include path: found at its line
])
def test_binary_files_are_refused(tmp_path: Path, content: bytes, line: int | None) -> None:
    """A binary file has no line worth naming; a NUL byte in an otherwise text file is named at its line."""
    write(tmp_path, {"bin.txt": content})
    with pytest.raises(RequirementFileError, match="not a text requirements file") as caught:
        parse_requirements_file(tmp_path / "bin.txt", source="extra", lenient=True)
    assert caught.value.line == line


def test_directory_and_missing_path_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RequirementFileError, match="is a directory"):
        parse_requirements_file(tmp_path, source="extra")
    with pytest.raises(RequirementFileError, match="does not exist"):
        parse_requirements_file(tmp_path / "missing.txt", source="extra")
    write(tmp_path, {"sub/x": "", "r.txt": "-r sub\n"})
    with pytest.raises(RequirementFileError, match=r"r.txt:1: included file `sub` is a directory"):
        parse_requirements_file(tmp_path / "r.txt", source="extra", display_root=tmp_path)


def test_display_paths(tmp_path: Path) -> None:
    write(tmp_path, {"a/r.txt": "numpy\n"})
    outside = parse_requirements_file(tmp_path / "a/r.txt", source="s", display_root=tmp_path / "b")
    assert outside.requirements[0].origin.path == "../a/r.txt"  # never this machine's absolute path
    inside = parse_requirements_file(tmp_path / "a/r.txt", source="s", display_root=tmp_path)
    assert inside.requirements[0].origin.path == "a/r.txt"
    plain = parse_requirements_file(tmp_path / "a/../a/r.txt", source="s")
    assert plain.requirements[0].origin.path == (tmp_path / "a/r.txt").as_posix()


# --- options --------------------------------------------------------------------------------


INDEX_LINES = [
    "-i https://pypi.org/simple", "--index-url=https://pypi.org/simple",
    "--extra-index-url https://download.pytorch.org/whl/cu126", "-f ./wheels", "--find-links=./w",
    "--no-index", "--trusted-host example.com",
]
INSTALL_LINES = [
    "--pre", "--prefer-binary", "--only-binary :all:", "--no-binary=numpy",
    "--use-feature truststore", "--require-hashes",
]


@pytest.mark.parametrize("lenient", [False, True])
@pytest.mark.parametrize("line", INDEX_LINES + INSTALL_LINES)
def test_index_and_install_options_are_reported_never_dropped(
    tmp_path: Path, line: str, lenient: bool
) -> None:
    parsed = parse(tmp_path, f"numpy\n{line}\nscipy\n", lenient=lenient)
    assert texts(parsed) == ["numpy", "scipy"]
    (warning,) = parsed.warnings
    assert warning.origin == Origin("requirements.txt", 2, "extra")
    assert warning.message.startswith("Ignored `--")
    if line in INDEX_LINES:
        assert "envbuild takes indexes from the torch profile and envbuild.toml" in warning.message
    else:
        assert "install options in requirement files do not reach uv" in warning.message


def test_several_options_on_one_line_and_credentials_hidden(tmp_path: Path) -> None:
    parsed = parse(tmp_path, "--pre --extra-index-url https://user:s3cret@mirror.example/simple\n")
    assert len(parsed.warnings) == 2
    assert "s3cret" not in parsed.warnings[1].message
    assert "https://***@mirror.example/simple" in parsed.warnings[1].message


@pytest.mark.parametrize(
    "line", ["--frobnicate", "-x foo", "-i", "--pre numpy", "--index-url 'unclosed"]
)
def test_bad_option_lines(tmp_path: Path, line: str) -> None:
    with pytest.raises(RequirementFileError, match=r"requirements.txt:2: "):
        parse(tmp_path, f"numpy\n{line}\n")
    parsed = parse(tmp_path, f"numpy\n{line}\n", lenient=True)
    assert texts(parsed) == ["numpy"]
    (warning,) = parsed.warnings
    assert warning.message.startswith("Skipped `") and warning.origin.line == 2


@pytest.mark.parametrize(
    "line", ["-e .", "--editable=git+https://github.com/a/b.git#egg=b", "-e./pkg"]
)
def test_editable_lines(tmp_path: Path, line: str) -> None:
    with pytest.raises(RequirementFileError, match="editable") as caught:
        parse(tmp_path, line)
    assert "virtual project" in str(caught.value.hint)
    parsed = parse(tmp_path, line, lenient=True, source="node X")
    assert parsed.requirements == ()
    assert "editable" in parsed.warnings[0].message and parsed.warnings[0].origin.source == "node X"


def test_per_requirement_options_are_stripped_and_reported(tmp_path: Path) -> None:
    text = ("numpy==2.2.0 \\\n    --hash=sha256:aaa \\\n    --hash sha256:bbb\n"
            "lib --config-settings editable_mode=compat --global-option=x\n")
    parsed = parse(tmp_path, text)
    assert [(r.text, str(r.requirement)) for r in parsed.requirements] == [
        ("numpy==2.2.0", "numpy==2.2.0"), ("lib", "lib"),
    ]
    first, second = parsed.warnings
    assert (first.origin.line, second.origin.line) == (1, 4)
    assert "`--hash`" in first.message and "hashes" in first.message
    assert "`--config-settings`" in second.message and "`--global-option`" in second.message


def test_unknown_per_requirement_option(tmp_path: Path) -> None:
    with pytest.raises(RequirementFileError, match="unknown per-requirement option `--frob`"):
        parse(tmp_path, "numpy --frob=1\n")
    assert parse(tmp_path, "numpy --frob=1\n", lenient=True).requirements == ()


# --- URLs, paths and names -------------------------------------------------------------------


def test_wheel_urls_and_paths_are_named_from_the_filename(tmp_path: Path) -> None:
    text = ("https://example.com/whl/flash_attn-2.7.4+cu126-cp311-cp311-linux_x86_64.whl\n"
            "./wheels/local_pkg-1.0-1-py3-none-any.whl\n"
            "/opt/w/abs_pkg-0.1-py3-none-any.whl ; sys_platform == 'linux'\n"
            "plain_pkg-2.0-py3-none-any.whl\n")
    parsed = parse(tmp_path, text)
    names = [r.requirement.name for r in parsed.requirements]
    assert names == ["flash_attn", "local_pkg", "abs_pkg", "plain_pkg"]
    urls = [r.requirement.url for r in parsed.requirements]
    assert urls[0] == "https://example.com/whl/flash_attn-2.7.4+cu126-cp311-cp311-linux_x86_64.whl"
    assert urls[1] == (tmp_path / "wheels/local_pkg-1.0-1-py3-none-any.whl").as_uri()
    assert urls[2] == "file:///opt/w/abs_pkg-0.1-py3-none-any.whl"
    assert str(parsed.requirements[2].requirement.marker) == 'sys_platform == "linux"'
    assert parsed.requirements[1].text == "./wheels/local_pkg-1.0-1-py3-none-any.whl"


def test_egg_fragment_names_a_local_path(tmp_path: Path) -> None:
    (req,) = parse(tmp_path, "./vendor/pkg#egg=vendored\n").requirements
    assert req.requirement.name == "vendored"
    assert req.requirement.url == (tmp_path / "vendor/pkg").as_uri() + "#egg=vendored"


@pytest.mark.parametrize("line", [
    "git+https://github.com/WASasquatch/img2texture.git", "https://example.com/pkg.tar.gz",
    "./pkg", "/abs/pkg", "../sibling", "https://example.com/not-a-wheel.whl",
    "git+https://github.com/a/b.git#egg=not/a/name",
])
def test_nameless_urls_and_paths(tmp_path: Path, line: str) -> None:
    with pytest.raises(RequirementFileError, match="needs a package name") as caught:
        parse(tmp_path, line)
    assert str(caught.value.hint).startswith("write `NAME @ ")
    parsed = parse(tmp_path, line, lenient=True, source="node N")
    assert parsed.requirements == ()
    assert parsed.warnings[0].origin == Origin("requirements.txt", 1, "node N")


@pytest.mark.parametrize(("line", "hint"), [
    ("numpy<1.24>=1.18", "did you mean `numpy>=1.18,<1.24`?"),
    ("opencv[ffmpeg]>=4 <5", "did you mean `opencv[ffmpeg]>=4,<5`?"),
    ("torch=2.1.0", None),
    ("numpy is great", None),
    ("numpy>=", None),
])
def test_invalid_requirement_hints(tmp_path: Path, line: str, hint: str | None) -> None:
    with pytest.raises(RequirementFileError, match="not a valid requirement") as caught:
        parse(tmp_path, line)
    assert caught.value.hint == hint
    assert f"`{line}`" in str(caught.value)


# --- merging ------------------------------------------------------------------------------


def test_markers_stay_separate_and_sorted() -> None:
    result = merge([
        sourced("numpy>=2"),
        sourced('numpy<2; python_version < "3.10"'),
        sourced("numpy!=2.1.0"),
        sourced("aiohttp"),
    ])
    assert rendered(result.requirements) == [
        "aiohttp", "numpy!=2.1.0,>=2", 'numpy<2; python_version < "3.10"',
    ]
    assert result.names() == frozenset({"numpy", "aiohttp"})


def test_extras_union_and_names_canonical() -> None:
    result = merge([
        sourced("Opencv_Python[B_x]"), sourced("opencv-python[a]>=4"), sourced("opencv.python"),
    ])
    (merged,) = result.requirements
    assert merged.pep508() == "opencv-python[a,b-x]>=4"
    assert merged.extras == frozenset({"a", "b-x"}) and len(merged.origins) == 3


def test_equal_specifiers_are_written_once() -> None:
    (merged,) = merge([sourced("a>=1.0.0"), sourced("a>=1.0"), sourced("a>=1.0,<2")]).requirements
    assert merged.pep508() == "a<2,>=1.0"


def test_torch_pin_against_profile_names_both_sources() -> None:
    profile = sourced("torch>=2.6.0", "profile cu126", "profiles/cu126.toml", 4)
    old = sourced("torch==2.1.0", "node OldNode", "custom_nodes/OldNode/requirements.txt", 2)
    with pytest.raises(ConflictError) as caught:
        merge([sourced("torch"), profile, old])
    assert caught.value.details == (
        "torch>=2.6.0 from profiles/cu126.toml:4 (profile cu126)",
        "torch==2.1.0 from custom_nodes/OldNode/requirements.txt:2 (node OldNode)",
    )
    hint = ("relax one of them, or leave the node out of the lock with `envbuild lock --exclude-node OldNode` (or "
        '[nodes] exclude = ["OldNode"] in envbuild.toml); ComfyUI still loads its folder: disable it (rename it to '
        "NAME.disabled) or remove it")
    assert caught.value.hint == hint
    assert "conflicting requirements for torch" in str(caught.value)


def test_conflict_names_only_the_clashing_pair() -> None:
    items = [sourced("numpy>=1.25", line=1), sourced("numpy<2", line=2),
             sourced("numpy==1.20", line=3)]
    with pytest.raises(ConflictError) as caught:
        merge(items)
    assert caught.value.details == (
        "numpy>=1.25 from r.txt:1 (extra)", "numpy==1.20 from r.txt:3 (extra)",
    )
    assert caught.value.hint == "relax one of them"


def test_self_contradicting_line_and_three_way_conflict() -> None:
    with pytest.raises(ConflictError) as caught:
        merge([sourced("a>=1"), sourced("a>2,<1", line=2)])
    assert caught.value.details == ("a>2,<1 from r.txt:2 (extra)",)
    three = [sourced("a>=1", line=1), sourced("a<2", line=2), sourced("a!=1.*", line=3)]
    with pytest.raises(ConflictError) as caught:
        merge(three)
    assert len(caught.value.details) == 3


def test_urls_merge_conflict_and_win_over_specifiers() -> None:
    wheel = "https://x.org/foo-1.0-py3-none-any.whl"
    items = [sourced(f"foo @ {wheel}"), sourced("foo>=1.0"), sourced(f"Foo[x] @ {wheel}")]
    (merged,) = merge(items).requirements
    assert merged.pep508() == f"foo[x] @ {wheel}"
    assert str(merged.specifier) == ">=1.0" and len(merged.origins) == 3
    git = "git+https://github.com/a/foo.git"
    (same,) = merge([sourced(f"foo @ {git}#egg=foo"), sourced(f"foo @ {git}")]).requirements
    assert same.url == git
    with pytest.raises(ConflictError, match="foo") as caught:
        merge([sourced(f"foo @ {wheel}"), sourced(f"foo @ {git}", "node N")])
    assert "same URL" in str(caught.value.hint) and "--exclude-node N" in str(caught.value.hint)


def test_url_with_marker_renders_parsable_pep508() -> None:
    text = 'foo @ https://x.org/foo.whl ; python_version >= "3.11"'
    (merged,) = merge([sourced(text)]).requirements
    assert merged.pep508() == 'foo @ https://x.org/foo.whl ; python_version >= "3.11"'
    assert Requirement(merged.pep508()).url == "https://x.org/foo.whl"


def test_constraints_merge_and_are_checked_against_requirements() -> None:
    constraints = [sourced("numpy<2", "c"), sourced("numpy!=1.26.0", "c"), sourced("torch<3", "c")]
    result = merge([sourced("numpy>=1.25")], constraints)
    assert rendered(result.constraints) == ["numpy!=1.26.0,<2", "torch<3"]
    assert result.names() == frozenset({"numpy"})
    with pytest.raises(ConflictError) as caught:
        merge([sourced("numpy>=1.25", line=7)], [sourced("numpy<1.20", "constraints", "c.txt", 3)])
    assert caught.value.details == ("numpy>=1.25 from r.txt:7 (extra)",
                                    "numpy<1.20 from c.txt:3 (constraints) (constraint)")
    with pytest.raises(ConflictError):
        merge([], [sourced("numpy<1"), sourced("numpy>1")])


@pytest.mark.parametrize(("spec", "expected"), [
    ("", True), ("<2,>=2", False), ("<1.24,>=1.18", True), ("==2.1.0,>=2.6", False),
    ("==2.7.1,>=2.6", True), (">1.0,<1.0.1", True), ("==1.2.*,!=1.2.3", True), ("===foo", True),
    ("==2.7.1+cu126,>=2.6", True), ("==2.7.1+cu126,!=2.7.1", False),
    ("==2.7.1,==2.7.1+cu128", True), ("~=2.0,>=3", False), ("~=2.0,<2.1", True),
    ("~=1.4.5,!=1.4.*", False), (">2.0b1,<2.0rc1", True),
    (">=2.0rc1,<2.0", False), ("<2.0", True), (">1.0,<1.0.post1", False), ("==1.*,!=1.*", False),
    (">0,<0.0.1", True), ("<0", False), (">=1!0", True), ("==1.0,!=1.0.0", False), (">99999", True),
])
def test_specifiers_satisfiable(spec: str, expected: bool) -> None:
    assert specifiers_satisfiable(SpecifierSet(spec)) is expected


# --- properties ---------------------------------------------------------------------------

FRAGMENTS = [
    "numpy>=1", "torch==2.1.0 ; python_version<'3.12'", "-i https://x/simple", "--pre", "-e .",
    "--extra-index-url", "git+https://a/b.git", "#egg=x", "\\", "pkg --hash=sha256:x", "--bogus",
    "'", '"', "./x.whl", "a @ b", ";", "--only-binary :all:", "[", "a[b", "x<1>=0", "=", "@",
    "https://h/p-1-py3-none-any.whl", "~", "C:\\x", "\t# c", "\ufeff", "\x00", "\r",
]
PIECES = st.one_of(st.text(max_size=30), st.sampled_from(FRAGMENTS))
TEXT = st.lists(PIECES, max_size=8).map("".join)
LINES = st.lists(TEXT, max_size=6).map("\n".join)
NO_INCLUDES = re.compile(r"(?:^|\s)-[rc]|--(?:requirement|constraint)")
FAKE = Path("/nonexistent-envbuild-test/requirements.txt")


@settings(max_examples=200, deadline=None)
@given(LINES)
def test_parse_raises_only_requirement_file_errors(text: str) -> None:
    assume(not NO_INCLUDES.search(text))
    try:
        parse_requirements_text(text, path=FAKE, source="extra")
    except RequirementFileError:
        pass
    parsed = parse_requirements_text(text, path=FAKE, source="node X", lenient=True)
    assert all(isinstance(w, Diagnostic) and w.message for w in parsed.warnings)


NAMES = ["numpy", "NumPy", "torch", "pillow", "foo"]
SPECS = ["", ">=1.0", "<2", "==1.5", "!=1.5", "~=1.4", ">=2", "==1.*", ">1.0,<1.0.1", "<1.0.0",
         ">=1.0.0"]
EXTRAS = ["", "[a]", "[B]"]
MARKERS = ["", '; python_version < "3.12"']


@st.composite
def simple_requirements(draw: st.DrawFn) -> list[SourcedRequirement]:
    row = st.tuples(st.sampled_from(NAMES), st.sampled_from(EXTRAS), st.sampled_from(SPECS),
                    st.sampled_from(MARKERS), st.booleans())
    rows = draw(st.lists(row, max_size=8))
    items = []
    for line, (name, extra, spec, marker, url) in enumerate(rows, start=1):
        body = f" @ https://x.org/{name}-1.0-py3-none-any.whl " if url and name == "foo" else spec
        items.append(sourced(f"{name}{extra}{body}{marker}", f"src{line % 3}", line=line))
    return items


def outcome(reqs: list[SourcedRequirement], cons: list[SourcedRequirement]) -> object:
    try:
        result = merge(reqs, cons)
    except ConflictError as error:
        return ("conflict", error.package)
    return [(m.pep508(), frozenset((o.text, o.origin) for o in m.origins))
            for m in (*result.requirements, *result.constraints)]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_merge_is_order_independent(data: st.DataObject) -> None:
    reqs, cons = data.draw(simple_requirements()), data.draw(simple_requirements())
    shuffled = data.draw(st.permutations(reqs)), data.draw(st.permutations(cons))
    assert outcome(*shuffled) == outcome(reqs, cons)


@settings(max_examples=200, deadline=None)
@given(simple_requirements())
def test_merged_pep508_round_trips(items: list[SourcedRequirement]) -> None:
    try:
        result = merge(items)
    except ConflictError:
        return
    for merged in result.requirements:
        again = Requirement(merged.pep508())
        reparsed = SourcedRequirement(again, Origin("x", 1, "y"), merged.pep508())
        (remerged,) = merge([reparsed]).requirements
        assert remerged.pep508() == merged.pep508()


RELEASES = st.lists(st.integers(0, 3), min_size=1, max_size=3).map(lambda p: ".".join(map(str, p)))
SUFFIXES = st.sampled_from(["", "", "", "rc1", ".post1", ".dev0"])
VERSIONS = st.builds(lambda release, suffix: release + suffix, RELEASES, SUFFIXES)
ONE_SPEC = st.one_of(
    st.builds(lambda op, v: op + v, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), VERSIONS),
    st.builds(lambda op, v: f"{op}{v}.*", st.sampled_from(["==", "!="]), RELEASES),
    st.builds(lambda v: f"~={v}.0", RELEASES),
)
GRID = [
    Version(f"{a}.{b}.{c}.{d}{suffix}")
    for a in range(5) for b in range(5) for c in range(5) for d in (0, 1)
    for suffix in ("", "rc1", "rc2", ".post1", ".post2", ".dev0", ".dev1")
]


@settings(max_examples=300, deadline=None)
@given(st.lists(ONE_SPEC, min_size=1, max_size=4))
def test_satisfiable_never_misses_a_version_on_a_grid(specs: list[str]) -> None:
    spec = SpecifierSet(",".join(specs))
    allow_pre = any(Version(s.version.removesuffix(".*")).is_prerelease for s in spec)
    allowed = (v for v in GRID if allow_pre or not v.is_prerelease)
    found = any(spec.contains(v, prereleases=True) for v in allowed)
    if found:
        assert specifiers_satisfiable(spec)
