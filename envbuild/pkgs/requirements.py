"""Read pip-style requirement files with provenance (merging them: `merging`).

Every requirement keeps its file, line and "who asked", because a conflict between a custom
node and ComfyUI is only fixable when the message names both lines. Strict mode (ComfyUI,
the Manager, the user's own files) stops at a bad line; lenient mode (custom nodes) skips it
and reports a Diagnostic, so one messy node cannot stop a deployment unnoticed.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from packaging.requirements import Requirement

from envbuild.core.errors import RequirementFileError
from envbuild.core.safeio import MIB, FileTooLargeError, NotARegularFileError, read_regular_file
from envbuild.pkgs.requirement_line import CONTROL, SCHEME, LineProblem, quote, to_requirement

NODE_SOURCE_PREFIX = "node "  # Origin.source of a custom node is "node <name>"
REQUIREMENTS_SIZE_LIMIT = MIB  # real requirement files are a few KiB; this bounds time and memory
MAX_INCLUDE_DEPTH = 32  # -r/-c nesting; real files nest two or three deep
MAX_LINE_LENGTH = 65536  # a line with dozens of --hash options is a few KiB; longer is junk, refused unread


@dataclass(frozen=True)
class Origin:
    """Where one requirement was written, and on whose behalf."""

    path: str
    line: int
    source: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line} ({self.source})"


@dataclass(frozen=True)
class SourcedRequirement:
    """A parsed requirement plus the text and place it came from."""

    requirement: Requirement
    origin: Origin
    text: str


@dataclass(frozen=True)
class Diagnostic:
    """Something envbuild ignored or skipped: reported, never silent."""

    origin: Origin
    message: str


@dataclass(frozen=True)
class ParsedFile:
    """Everything one requirement file and its includes contributed."""

    requirements: tuple[SourcedRequirement, ...]
    constraints: tuple[SourcedRequirement, ...]
    warnings: tuple[Diagnostic, ...]
    files: tuple[Path, ...]


_COMMENT = re.compile(r"(^|\s)#.*$")
_REASONS = {
    "index": "envbuild takes indexes from the torch profile and envbuild.toml, not from "
    "requirement files; a package that only that index has must be served by your default index "
    "(UV_DEFAULT_INDEX) or a mirror",
    "install": "install options in requirement files do not reach uv; envbuild sets the "
    "resolver options itself",
    "per-requirement": "envbuild's lock carries its own hashes and uv builds with its own "
    "settings, so per-requirement options are not passed on",
}
_SHORT = {"-i": "--index-url", "-f": "--find-links", "-r": "--requirement", "-c": "--constraint",
          "-e": "--editable", "-C": "--config-settings"}
_OPTION_KINDS = {  # kind -> options; a trailing "!" marks a flag that takes no value
    "include": "--requirement --constraint",
    "editable": "--editable",
    "index": "--index-url --extra-index-url --find-links --trusted-host --no-index!",
    "install": "--only-binary --no-binary --use-feature --pre! --prefer-binary! --require-hashes!",
    "per-requirement": "--hash --config-settings --global-option --install-option",
}
_OPTIONS = {option.rstrip("!"): (not option.endswith("!"), kind)
            for kind, options in _OPTION_KINDS.items() for option in options.split()}


@dataclass(frozen=True)
class _FileContext:
    """The file being read: where includes resolve from and what its lines become."""

    path: Path
    shown: str
    constraint: bool
    stack: tuple[Path, ...]  # real paths of the files open right now, to catch cycles


def parse_requirements_file(
    path: Path, *, source: str, lenient: bool = False, display_root: Path | None = None,
    confine_to: Path | None = None,
) -> ParsedFile:
    """Parse a requirements file and everything it includes.

    `confine_to`: the folder of the file's owner (a node's folder, the ComfyUI checkout). The
    file and its -r/-c includes must lie inside it, links resolved: a node must not be able to
    pull `~/.netrc` into the committed warnings. None (the user's own files): anything goes.
    """
    reader = _Reader(source, lenient, display_root, confine_to)
    try:
        shown = _display(path, display_root)
        reader.check_inside(path, shown)
        reader.read(path, _read_text(path, shown))
    except RequirementFileError as exc:
        raise _with_node_hint(exc, source) from None
    return reader.result()


def parse_requirements_text(
    text: str, *, path: Path, source: str, lenient: bool = False, display_root: Path | None = None,
    confine_to: Path | None = None,
) -> ParsedFile:
    """Parse `text` as the content of `path`, so includes resolve next to `path` (and stay in `confine_to`)."""
    reader = _Reader(source, lenient, display_root, confine_to)
    try:
        reader.check_inside(path, _display(path, display_root))
        reader.read(path, text.removeprefix("\ufeff"))
    except RequirementFileError as exc:
        raise _with_node_hint(exc, source) from None
    return reader.result()


def exclude_node_hint(*nodes: str) -> str:
    """The one way to say "leave the node out", whichever command found the problem: only the lock has
    --exclude-node (or [nodes] exclude), and ComfyUI still loads an excluded node's folder."""
    flags = " ".join(f"--exclude-node {node}" for node in nodes)
    listed = ", ".join(f'"{node}"' for node in nodes)
    return (f"leave the node out of the lock with `envbuild lock {flags}` (or [nodes] exclude = [{listed}] in "
            "envbuild.toml); ComfyUI still loads its folder: disable it (rename it to NAME.disabled) or remove it")


def _with_node_hint(exc: RequirementFileError, source: str) -> RequirementFileError:
    """A custom node's unreadable file or broken include stops the lock: name the way around it."""
    if source.startswith(NODE_SOURCE_PREFIX) and exc.hint is None:
        exc.hint = f"fix the file, or {exclude_node_hint(source.removeprefix(NODE_SOURCE_PREFIX))}"
    return exc


def _read_text(path: Path, shown: str) -> str:
    """Read UTF-8 text, refusing directories, binaries, FIFOs, devices and huge files plainly."""
    if path.is_dir():
        raise RequirementFileError(shown, None, "is a directory, not a requirements file")
    try:
        data = read_regular_file(path, REQUIREMENTS_SIZE_LIMIT)
    except FileNotFoundError:
        raise RequirementFileError(shown, None, "does not exist") from None
    except IsADirectoryError:
        raise RequirementFileError(shown, None, "is a directory, not a requirements file") from None
    except (NotARegularFileError, FileTooLargeError) as exc:
        raise RequirementFileError(shown, None, f"{exc.reason}: envbuild reads requirements only from "
                                   f"regular files of at most {REQUIREMENTS_SIZE_LIMIT // MIB} MiB") from None
    except OSError as exc:
        raise RequirementFileError(shown, None, f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    nul = data.find(b"\x00")
    if nul >= 0:  # in a text file, at its line: a NUL smuggled into an -r path is found where it is
        line = None if text is None else len(re.split(rb"\r\n|\r|\n", data[:nul]))
        raise RequirementFileError(shown, line, "not a text requirements file (it contains NUL bytes)")
    if text is None:
        raise RequirementFileError(shown, None, "not a text requirements file (it is not valid UTF-8)")
    return text


def _display(path: Path, root: Path | None) -> str:
    """Path as shown to users and written into generated files: relative to root, with `..` when
    outside it (never this machine's absolute path), posix separators always. The same rule as
    settings/config.py `Config.display`."""
    if root is None:
        return PurePath(os.path.normpath(path)).as_posix()
    absolute = os.path.abspath(path)
    try:
        return PurePath(os.path.relpath(absolute, os.path.abspath(root))).as_posix()
    except ValueError:  # another Windows drive
        return PurePath(absolute).as_posix()


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Drop comments and join `\\` continuations like pip; yield (first line number, text)."""
    start, parts = 0, list[str]()
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = raw if len(raw) > MAX_LINE_LENGTH else _COMMENT.sub("", raw).rstrip()  # too long: refused whole
        if line.endswith("\\"):
            start = start if parts else number
            parts.append(line[:-1])
        elif parts:
            yield start, "".join([*parts, line]).strip()
            parts = []
        else:
            yield number, line.strip()
    if parts:
        yield start, "".join(parts).strip()


class _Reader:
    """Collects what a root file and its includes contribute, in read order."""

    def __init__(self, source: str, lenient: bool, display_root: Path | None, confine_to: Path | None) -> None:
        self.source, self.lenient, self.display_root = source, lenient, display_root
        self.root = None if confine_to is None else os.path.normcase(os.path.realpath(confine_to))
        self.requirements: list[SourcedRequirement] = []
        self.constraints: list[SourcedRequirement] = []
        self.warnings: list[Diagnostic] = []
        self.files: list[Path] = []
        self.seen: set[tuple[Path, bool]] = set()

    def result(self) -> ParsedFile:
        return ParsedFile(tuple(self.requirements), tuple(self.constraints),
                          tuple(self.warnings), tuple(self.files))

    def read(self, path: Path, text: str, constraint: bool = False,
             stack: tuple[Path, ...] = ()) -> None:
        real = Path(os.path.realpath(path))
        self.seen.add((real, constraint))
        if path not in self.files:
            self.files.append(path)
        ctx = _FileContext(path, _display(path, self.display_root), constraint, (*stack, real))
        for number, line in _logical_lines(text):
            try:
                if len(line) > MAX_LINE_LENGTH:
                    raise LineProblem(f"the line is {len(line)} characters long, and envbuild reads lines of "
                                       f"at most {MAX_LINE_LENGTH}")
                if line.startswith("-"):
                    self._options_line(ctx, number, line)
                elif line:
                    self._requirement_line(ctx, number, line)
            except LineProblem as problem:
                self._problem(ctx, number, line, problem)

    def _is_inside(self, path: Path) -> bool:
        if self.root is None:
            return True
        real = os.path.normcase(os.path.realpath(path))
        try:
            return os.path.commonpath([real, self.root]) == self.root
        except ValueError:  # another drive (Windows)
            return False

    def check_inside(self, path: Path, shown: str) -> None:
        """The root file itself may be a link out of its owner's folder: refused like an include."""
        if not self._is_inside(path):
            raise RequirementFileError(shown, None, f"is a link to a file outside the folder of {self.source}, "
                                       "and envbuild reads only files inside it")

    def _note(self, ctx: _FileContext, number: int, message: str) -> None:
        self.warnings.append(Diagnostic(Origin(ctx.shown, number, self.source), message))

    def _problem(self, ctx: _FileContext, number: int, line: str, problem: LineProblem) -> None:
        if not self.lenient or problem.fatal:
            raise RequirementFileError(ctx.shown, number, f"{quote(line)}: {problem.message}",
                                       hint=problem.hint)
        sentence = f"Skipped {quote(line)}: {problem.message}"
        sentence += f"; {problem.hint}" if problem.hint else ""
        sentence += "" if sentence.endswith(("?", ".")) else "."
        self._note(ctx, number, f"{sentence} If the package is needed, add a corrected line to "
                                "your own requirements.")

    def _requirement_line(self, ctx: _FileContext, number: int, line: str) -> None:
        cut = re.search(r"\s-", line)  # like pip: options start at the first " -"
        text, options = (line[: cut.start()].strip(), line[cut.start():]) if cut else (line, "")
        requirement = to_requirement(text, ctx.path.parent)
        ignored = list(dict.fromkeys(quote(name) for name, _ in _parse_options(options, True)))
        if ignored:
            self._note(ctx, number, f"Ignored {', '.join(ignored)} on `{text}`: "
                                    f"{_REASONS['per-requirement']}.")
        target = self.constraints if ctx.constraint else self.requirements
        target.append(SourcedRequirement(requirement, Origin(ctx.shown, number, self.source), text))

    def _options_line(self, ctx: _FileContext, number: int, line: str) -> None:
        for name, value in _parse_options(line, False):
            kind = _OPTIONS[name][1]
            if kind == "include":
                constraint = ctx.constraint or name == "--constraint"
                self._include(ctx, number, value or "", constraint)
            elif kind == "editable":
                raise LineProblem("editable installs (`-e`) cannot be locked",
                                   hint="envbuild locks a virtual project; install editable "
                                   "packages yourself or add a `name @ url` line")
            else:
                written = quote(name if value is None else f"{name} {value}")
                self._note(ctx, number, f"Ignored {written}: {_REASONS[kind]}.")

    def _include(self, ctx: _FileContext, number: int, target: str, constraint: bool) -> None:
        """Read an included file once; a bad target or a cycle fails even in lenient mode."""
        if CONTROL.search(target) or SCHEME.match(target):
            raise RequirementFileError(ctx.shown, number, f"cannot include {quote(target)}: only "
                                       "local files without control characters can be included")
        if len(ctx.stack) >= MAX_INCLUDE_DEPTH:
            raise RequirementFileError(ctx.shown, number, f"cannot include {quote(target)}: includes are "
                                       f"nested more than {MAX_INCLUDE_DEPTH} deep")
        path = Path(os.path.normpath(ctx.path.parent / os.path.expanduser(target)))
        if not self._is_inside(path):  # named as written: neither the target's text nor its real path is shown
            raise RequirementFileError(ctx.shown, number, f"cannot include {quote(target)}: it is outside the "
                                       f"folder of {self.source}, and a file may include only files inside its "
                                       "owner's folder (a link out of it counts as outside)")
        shown, real = _display(path, self.display_root), Path(os.path.realpath(path))
        if real in ctx.stack:
            chain = [_display(p, self.display_root) for p in ctx.stack[ctx.stack.index(real):]]
            raise RequirementFileError(ctx.shown, number, "include cycle: " + " -> ".join(
                [*chain, shown]), hint="remove one of the -r/-c lines")
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise RequirementFileError(ctx.shown, number,
                                       f"included file {quote(target)} {what} ({shown})")
        if (real, constraint) not in self.seen:
            self.read(path, _read_text(path, shown), constraint, ctx.stack)


def _parse_options(text: str, per_requirement: bool) -> list[tuple[str, str | None]]:
    """Split options into (long name, value); an option that does not belong here fails."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise LineProblem(f"the options cannot be split ({exc})") from None
    result: list[tuple[str, str | None]] = []
    while tokens:
        name, value = _split_option(tokens.pop(0))
        takes_value, kind = _OPTIONS.get(name, (False, "unknown"))
        if (kind == "per-requirement") != per_requirement or kind == "unknown":
            where = "per-requirement option" if per_requirement else "option"
            raise LineProblem(f"unknown {where} {quote(name)}", hint=(
                "only --hash, --config-settings and --global-option may follow a requirement"
                if per_requirement else "requirement files may use -r, -c and pip's index "
                "options; put each requirement on its own line"))
        if takes_value and value is None:
            if not tokens:
                raise LineProblem(f"option {quote(name)} needs a value")
            value = tokens.pop(0)
        result.append((name, value))
    return result


def _split_option(token: str) -> tuple[str, str | None]:
    """`--x=y` -> (--x, y); `-rfile` -> (--requirement, file); `-i` -> (--index-url, None)."""
    if token.startswith("--"):
        name, equals, value = token.partition("=")
        return name, (value if equals else None)
    if token.startswith("-") and len(token) > 2:
        return _SHORT.get(token[:2], token[:2]), token[2:]
    return _SHORT.get(token, token), None
