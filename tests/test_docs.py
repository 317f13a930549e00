"""The docs' reference pages checked against the code: the CLI page regenerated and compared, and the
exit codes, envbuild.toml keys and ENVBUILD_* variables each listed exactly where the code has them.
Also: every page is in mkdocs.yml's nav, and the README stays a front door with CI's quick start."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "envbuild"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_what_the_click_group_says() -> None:
    generated = _generator().render()
    committed = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    assert committed == generated, "docs/reference/cli.md is stale: run python scripts/gen_reference.py"


def test_cli_reference_lists_every_command_and_option() -> None:
    """The page is not an empty shell: each command's own options appear under it."""
    import click

    from envbuild.cli import cli

    text = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    ctx = click.Context(cli, info_name="envbuild")
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f"\n## envbuild {name}\n" in text
        for param in command.params:
            if getattr(param, "hidden", False):  # hidden from --help, so from the page too
                continue
            for opt in getattr(param, "opts", []):
                if opt.startswith("-"):
                    assert opt in text, f"{name}: {opt}"


def _code_exit_codes() -> set[int]:
    """`exit_code = N` in any class body under envbuild/, and the CLI handler's literal `ctx.exit(N)`."""
    codes = {0}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
                    value = getattr(stmt, "value", None)
                    if (isinstance(target, ast.Name) and target.id == "exit_code"
                            and isinstance(value, ast.Constant) and isinstance(value.value, int)):
                        codes.add(value.value)
    handler = ast.parse((PACKAGE / "cli" / "__init__.py").read_text(encoding="utf-8"))
    for node in ast.walk(handler):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, int)):
            codes.add(node.args[0].value)
    return codes


def test_exit_codes_page_names_the_codes_the_code_has() -> None:
    text = (REFERENCE / "exit-codes.md").read_text(encoding="utf-8")
    documented = {int(code) for row in re.findall(r"^\| ([0-9][0-9, ]*) \|", text, re.MULTILINE)
                  for code in row.split(",")}
    code = _code_exit_codes()
    assert {1, 2, 8, 70, 130} <= code  # the scan finds what is there (errors.py, comfy/git.py, the handler)
    assert documented == code, f"only in the docs: {documented - code}; only in the code: {code - documented}"


def _config_keys() -> set[str]:
    from envbuild.settings import config, mirrors, models, pins

    keys = {f"[{section}] {key}" for section, names in config._KEYS.items() for key in names}
    keys |= {f"[mirrors] {key}" for key in mirrors.KEYS}
    keys |= {f"[custom-nodes] {key}" for key in pins.PIN_KEYS | pins.REGISTRY_KEYS}
    keys |= {f"[models] {key}" for key in models.MODEL_KEYS | models.SETTING_KEYS}
    return keys


def test_config_page_lists_every_key_envbuild_reads() -> None:
    text = (REFERENCE / "config.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(\[[a-z-]+\] [A-Za-z0-9_-]+)`", text))
    keys = _config_keys()
    assert "[lock] exclude-newer" in keys and "[custom-nodes] commit" in keys
    assert keys - documented == set(), "keys missing from docs/reference/config.md"
    assert documented - keys == set(), "docs/reference/config.md names keys envbuild does not read"


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\bENVBUILD_[A-Z0-9_]*[A-Z0-9]\b", text))


def test_environment_page_lists_every_envbuild_variable() -> None:
    used: set[str] = set()
    for path in PACKAGE.rglob("*"):
        if path.is_file() and path.suffix in {".py", ".toml", ".txt", ".sh", ".json"}:
            used |= _variables(path.read_text(encoding="utf-8", errors="replace"))
    documented = _variables((REFERENCE / "environment.md").read_text(encoding="utf-8"))
    assert {"ENVBUILD_PYTORCH_INDEX", "ENVBUILD_MODELS"} <= used
    assert used - documented == set(), "variables missing from docs/reference/environment.md"
    assert documented - used == set(), "docs/reference/environment.md names variables envbuild does not read"


def test_every_page_is_in_the_nav() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == listed, f"not in nav: {pages - listed}; in nav, no page: {listed - pages}"


def test_readme_is_a_front_door_with_the_quick_start() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 220
    assert ("python3 -m venv .envbuild-venv && .envbuild-venv/bin/python -m pip install . && "
            ".envbuild-venv/bin/envbuild lock --all\n") in text
    assert ".envbuild-venv/bin/python -m pip install '.[test]' && .envbuild-venv/bin/python -m pytest\n" in text
    assert '`-m "not network"`' in text
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).is_file(), target


def _first_bash_block(text: str) -> str:
    return text.split("```bash\n", 1)[1].split("```", 1)[0]


def test_tutorial_runs_the_readme_commands() -> None:
    """The README condenses the tutorial: both give the same commands (test_comfy_workflow runs them)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From zero to ComfyUI\n", 1)[1].split("\n## ", 1)[0]
    tutorial = (DOCS / "tutorial" / "zero-to-comfyui.md").read_text(encoding="utf-8")
    assert _first_bash_block(section) == _first_bash_block(tutorial)


def test_profiles_catalogue_lists_every_shipped_profile_and_where_it_ended() -> None:
    """Each profiles/*.toml has a row; a profile whose line ended (`last-torch`) says so in "Ended"."""
    from envbuild.core.tomlfile import load_toml

    text = (REFERENCE / "profiles.md").read_text(encoding="utf-8")
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and not set(cells[0]) <= {"-"}:
            for name in re.sub(r"\(.*?\)", "", cells[0]).split(","):
                rows[name.strip()] = cells
    shipped = {path.stem: path for path in (ROOT / "profiles").glob("*.toml")}
    assert len(shipped) >= 10
    assert set(shipped) - set(rows) == set(), "profiles missing from docs/reference/profiles.md"
    variants = {f"{name}-pypi" for name, path in shipped.items() if "pypi" in load_toml(path)}
    assert set(rows) - set(shipped) - variants - {"Profile"} == set(), "profiles.md lists profiles not shipped"
    for name, path in shipped.items():
        last = load_toml(path).get("last-torch")
        if last is not None:
            assert str(last) in rows[name][2], f"{name}: last-torch {last} not in its Ended cell"
