"""Reading TOML files envbuild does not write, with errors that name the file and line.

tomllib is fast and in the standard library from 3.11; on 3.10 tomlkit (already a dependency
for writing) parses instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from envbuild.core.errors import ConfigError
from envbuild.core.safeio import MIB, FileTooLargeError, NotARegularFileError, read_regular_file

# A profile, envbuild.toml or a node's pyproject is a few KiB; anything near this is not one.
TOML_SIZE_LIMIT = 4 * MIB


def _parser() -> tuple[Callable[[str], dict[str, Any]], tuple[type[Exception], ...]]:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads, (tomllib.TOMLDecodeError,)
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    return (lambda text: tomlkit.parse(text).unwrap()), (TOMLKitError,)


def load_toml(path: Path, *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """Parse a TOML file into plain Python values."""
    try:
        text = read_regular_file(path, TOML_SIZE_LIMIT).decode("utf-8-sig")
    except IsADirectoryError:
        raise error(path, "is a directory, not a TOML file") from None
    except FileNotFoundError:
        raise error(path, "does not exist") from None
    except UnicodeDecodeError:
        raise error(path, "is not a UTF-8 text file") from None
    except (NotARegularFileError, FileTooLargeError) as exc:
        raise error(path, f"{exc.reason}: envbuild reads TOML only from regular files of at most "
                          f"{TOML_SIZE_LIMIT // MIB} MiB") from None
    except OSError as exc:
        raise error(path, f"cannot be read: {exc.strerror}") from None
    return parse_toml(text, path, error=error)


def parse_toml(text: str, path: Path | str, *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    loads, errors = _parser()
    try:
        return loads(text)
    except errors as exc:
        raise error(path, f"is not valid TOML: {exc}") from None


def check_keys(
    table: Mapping[str, Any], allowed: set[str], where: str, path: Path | str,
    *, error: type[ConfigError] = ConfigError,
) -> None:
    """Unknown keys are errors, with the nearest known key as a hint (a typo is the usual cause)."""
    for key in table:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(sorted(allowed))}"
            raise error(path, f"unknown key `{where}{key}`", hint=hint)


def expect(
    value: Any, kind: type | tuple[type, ...], key: str, path: Path | str,
    *, error: type[ConfigError] = ConfigError,
) -> Any:
    """Type check one value; bool is not accepted where an int is expected."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if not ok:
        names = " or ".join(_type_name(k) for k in kinds)
        raise error(path, f"`{key}` must be {names}, not {_type_name(type(value))} ({value!r})")
    return value


def expect_str_list(value: Any, key: str, path: Path | str, *, error: type[ConfigError] = ConfigError) -> list[str]:
    expect(value, list, key, path, error=error)
    for i, item in enumerate(value):
        expect(item, str, f"{key}[{i}]", path, error=error)
    return list(value)


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", list: "an array",
            dict: "a table", float: "a number"}.get(kind, kind.__name__)
