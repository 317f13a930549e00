"""Read pip-style requirement files with provenance, and merge them into one set.

Every requirement keeps its file, line and "who asked", because a conflict between a custom
node and ComfyUI is only fixable when the message names both lines. Strict mode (ComfyUI,
the Manager, the user's own files) stops at a bad line; lenient mode (custom nodes) skips it
and reports a Diagnostic, so one messy node cannot stop a deployment unnoticed.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path, PurePath
from urllib.parse import unquote, urlsplit

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from envbuild.errors import ConflictError, RequirementFileError
from envbuild.runner import redact
from envbuild.safeio import MIB, FileTooLargeError, NotARegularFileError, read_regular_file

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
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C1 too: \x9b starts a terminal escape
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|file:)")
_PATH_START = re.compile(r"^(?:\.\.?(?:[/\\]|$)|[/\\~]|[A-Za-z]:[/\\])")
_URL_SCHEMES = ("http", "https", "file")
_ARCHIVE = re.compile(r"\.(?:whl|zip|tar\.gz|tgz|tar\.bz2|tar\.xz|tar)$", re.IGNORECASE)
_VERSION = r"[A-Za-z0-9.*+!_-]+"
_OPERATOR = r"~=|==|!=|<=|>=|<|>"
_RUN_TOGETHER = re.compile(
    rf"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*((?:(?:{_OPERATOR})\s*{_VERSION}\s*){{2,}})$"
)

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


class _LineProblem(Exception):
    """A bad line: raised as an error in strict mode, turned into a Diagnostic in lenient."""

    def __init__(self, message: str, hint: str | None = None, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.message, self.hint, self.fatal = message, hint, fatal  # fatal: an error even when lenient


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


def _with_node_hint(exc: RequirementFileError, source: str) -> RequirementFileError:
    """A custom node's unreadable file or broken include stops the lock: name the way around it."""
    if source.startswith(NODE_SOURCE_PREFIX) and exc.hint is None:
        exc.hint = f"fix the file, or leave the node out with --exclude-node {source.removeprefix(NODE_SOURCE_PREFIX)}"
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
    """Path as shown to users: relative to root when inside it, posix separators always."""
    if root is None:
        return PurePath(os.path.normpath(path)).as_posix()
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return absolute.as_posix()


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
                    raise _LineProblem(f"the line is {len(line)} characters long, and envbuild reads lines of "
                                       f"at most {MAX_LINE_LENGTH}")
                if line.startswith("-"):
                    self._options_line(ctx, number, line)
                elif line:
                    self._requirement_line(ctx, number, line)
            except _LineProblem as problem:
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

    def _problem(self, ctx: _FileContext, number: int, line: str, problem: _LineProblem) -> None:
        if not self.lenient or problem.fatal:
            raise RequirementFileError(ctx.shown, number, f"{_quote(line)}: {problem.message}",
                                       hint=problem.hint)
        sentence = f"Skipped {_quote(line)}: {problem.message}"
        sentence += f"; {problem.hint}" if problem.hint else ""
        sentence += "" if sentence.endswith(("?", ".")) else "."
        self._note(ctx, number, f"{sentence} If the package is needed, add a corrected line to "
                                "your own requirements.")

    def _requirement_line(self, ctx: _FileContext, number: int, line: str) -> None:
        cut = re.search(r"\s-", line)  # like pip: options start at the first " -"
        text, options = (line[: cut.start()].strip(), line[cut.start():]) if cut else (line, "")
        requirement = _to_requirement(text, ctx.path.parent)
        ignored = list(dict.fromkeys(_quote(name) for name, _ in _parse_options(options, True)))
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
                raise _LineProblem("editable installs (`-e`) cannot be locked",
                                   hint="envbuild locks a virtual project; install editable "
                                   "packages yourself or add a `name @ url` line")
            else:
                written = _quote(name if value is None else f"{name} {value}")
                self._note(ctx, number, f"Ignored {written}: {_REASONS[kind]}.")

    def _include(self, ctx: _FileContext, number: int, target: str, constraint: bool) -> None:
        """Read an included file once; a bad target or a cycle fails even in lenient mode."""
        if _CONTROL.search(target) or _SCHEME.match(target):
            raise RequirementFileError(ctx.shown, number, f"cannot include {_quote(target)}: only "
                                       "local files without control characters can be included")
        if len(ctx.stack) >= MAX_INCLUDE_DEPTH:
            raise RequirementFileError(ctx.shown, number, f"cannot include {_quote(target)}: includes are "
                                       f"nested more than {MAX_INCLUDE_DEPTH} deep")
        path = Path(os.path.normpath(ctx.path.parent / os.path.expanduser(target)))
        if not self._is_inside(path):  # named as written: neither the target's text nor its real path is shown
            raise RequirementFileError(ctx.shown, number, f"cannot include {_quote(target)}: it is outside the "
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
                                       f"included file {_quote(target)} {what} ({shown})")
        if (real, constraint) not in self.seen:
            self.read(path, _read_text(path, shown), constraint, ctx.stack)


def _quote(text: str, limit: int = 200) -> str:
    """Quote a line for a message, hiding credentials and cutting very long lines.

    Cut first, so a huge line costs nothing; a URL's user:password cut in the middle (no `@` left
    to find) is masked as a whole."""
    shown = redact(text[:limit])
    if len(text) > limit:
        start = shown.rfind("://") + 3
        if start > 2 and not re.search(r"[/@\s]", shown[start:]):
            shown = shown[:start] + "***"
        shown += "..."
    return "`" + _CONTROL.sub(lambda char: f"\\x{ord(char.group()):02x}", shown) + "`"


def _parse_options(text: str, per_requirement: bool) -> list[tuple[str, str | None]]:
    """Split options into (long name, value); an option that does not belong here fails."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise _LineProblem(f"the options cannot be split ({exc})") from None
    result: list[tuple[str, str | None]] = []
    while tokens:
        name, value = _split_option(tokens.pop(0))
        takes_value, kind = _OPTIONS.get(name, (False, "unknown"))
        if (kind == "per-requirement") != per_requirement or kind == "unknown":
            where = "per-requirement option" if per_requirement else "option"
            raise _LineProblem(f"unknown {where} {_quote(name)}", hint=(
                "only --hash, --config-settings and --global-option may follow a requirement"
                if per_requirement else "requirement files may use -r, -c and pip's index "
                "options; put each requirement on its own line"))
        if takes_value and value is None:
            if not tokens:
                raise _LineProblem(f"option {_quote(name)} needs a value")
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


def _to_requirement(text: str, base: Path) -> Requirement:
    """Parse one requirement; URL and path lines get their name from #egg= or the wheel."""
    if _CONTROL.search(text):
        raise _LineProblem("it contains control characters")
    location, marker = (re.split(r";(?=\s)", text, maxsplit=1) + [""])[:2]
    location = location.strip()
    if _SCHEME.match(text) or _PATH_START.match(text) or (
        _ARCHIVE.search(location) and not re.search(r"[@\s]", location)
    ):
        is_url = _SCHEME.match(location) is not None
        url = location if is_url else _path_to_url(location, base)
        name = _egg_name(location) or _wheel_name(location)
        if name is None:
            raise _LineProblem("a URL or path needs a package name: envbuild cannot tell which "
                               "package it installs without building it",
                               hint="write " + _quote(f"NAME @ {url}"))
        text = f"{name} @ {url}" + (f" ; {marker.strip()}" if marker.strip() else "")
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise _LineProblem(f"not a valid requirement ({str(exc).splitlines()[0]})",
                           hint=_suggest(text)) from None
    if requirement.url:
        _check_url(requirement.url)
    return requirement


def _check_url(url: str) -> None:
    """PEP 508 accepts any `scheme:...`; uv fetches only these, so anything else is caught at its line."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    vcs, plus, transport = scheme.partition("+")
    if scheme in _URL_SCHEMES or (plus and vcs == "git" and transport in _URL_SCHEMES + ("ssh",)):
        if not parts.netloc and (transport or scheme) != "file":
            raise _LineProblem(f"the URL {_quote(url)} names no host")
        # ssh's `git@host` names an account, not a secret; any other user or password would be committed
        if parts.password is not None or (parts.username is not None and transport != "ssh"):
            raise _LineProblem(f"the URL {_quote(url)} carries credentials, and envbuild never writes "
                               "credentials into the lock", fatal=True,
                               hint="remove them from the URL: uv reads credentials for a host from ~/.netrc "
                                    "(or a keyring, with UV_KEYRING_PROVIDER=subprocess)")
        return
    raise _LineProblem(f"the URL scheme `{scheme}:` cannot be fetched",
                       hint="uv fetches http://, https:// and file:// archives and git+https://, git+ssh:// "
                            "repositories")


def _path_to_url(location: str, base: Path) -> str:
    """A local path, relative to the file naming it, as the file:// URL uv needs."""
    path, hash_sign, fragment = location.partition("#")
    absolute = Path(os.path.abspath(base / os.path.expanduser(path)))
    return absolute.as_uri() + (f"#{fragment}" if hash_sign else "")


def _egg_name(location: str) -> str | None:
    for part in location.partition("#")[2].split("&"):
        key, _, value = part.partition("=")
        if key == "egg" and _NAME.match(value):
            return value
    return None


def _wheel_name(location: str) -> str | None:
    """PEP 427: `name-version(-build)?-python-abi-platform.whl` names its project (like pip)."""
    path = urlsplit(location).path if "://" in location else location.partition("#")[0]
    filename = re.split(r"[/\\]", unquote(path))[-1]
    if not filename.lower().endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    return parts[0] if len(parts) in (5, 6) and _NAME.match(parts[0]) else None


def _suggest(text: str) -> str | None:
    """An honest guess for one common slip: specifiers run together, as in `a<2>=1`."""
    run = _RUN_TOGETHER.match(text)
    if run is None or "," in run.group(3):
        return None
    specs = re.findall(rf"({_OPERATOR})\s*({_VERSION})", run.group(3))
    specs.sort(key=lambda spec: not spec[0].startswith(">"))  # lower bound first
    guess = run.group(1) + (run.group(2) or "") + ",".join(op + v for op, v in specs)
    try:
        Requirement(guess)
    except InvalidRequirement:
        return None
    return f"did you mean `{guess}`?"


@dataclass(frozen=True)
class MergedRequirement:
    """Every input for one (name, marker), combined into one requirement."""

    name: str
    extras: frozenset[str]
    specifier: SpecifierSet
    marker: Marker | None
    url: str | None
    origins: tuple[SourcedRequirement, ...]

    def pep508(self) -> str:
        """Stable PEP 508 text. PEP 508 allows a URL or specifiers, not both: a URL wins, and
        the specifiers stay in `specifier` (their origins in `origins`) for reporting."""
        head = self.name + (f"[{','.join(sorted(self.extras))}]" if self.extras else "")
        if self.url is not None:
            return f"{head} @ {self.url}" + (f" ; {self.marker}" if self.marker else "")
        head += ",".join(sorted(str(spec) for spec in self.specifier))
        return head + (f"; {self.marker}" if self.marker else "")


@dataclass(frozen=True)
class MergeResult:
    """Merged requirements and constraints, each sorted by (name, marker)."""

    requirements: tuple[MergedRequirement, ...]
    constraints: tuple[MergedRequirement, ...]

    def names(self) -> frozenset[str]:
        return frozenset(merged.name for merged in self.requirements)


def merge(
    requirements: Iterable[SourcedRequirement], constraints: Iterable[SourcedRequirement] = ()
) -> MergeResult:
    """Merge per (name, marker), independent of input order.

    Entries with different markers stay apart and are not evaluated: uv combines them per
    environment. A constraint must leave a version for the requirement it constrains.
    """
    merged, merged_constraints = _merge_groups(requirements), _merge_groups(constraints)
    by_key = {(m.name, str(m.marker or "")): m for m in merged}
    for constraint in merged_constraints:
        requirement = by_key.get((constraint.name, str(constraint.marker or "")))
        if requirement is not None:
            _check_group(requirement.name, [*requirement.origins, *constraint.origins],
                         constraint.origins)
    return MergeResult(merged, merged_constraints)


def _merge_groups(items: Iterable[SourcedRequirement]) -> tuple[MergedRequirement, ...]:
    groups: dict[tuple[str, str], list[SourcedRequirement]] = {}
    for item in items:
        key = (canonicalize_name(item.requirement.name), str(item.requirement.marker or ""))
        groups.setdefault(key, []).append(item)
    return tuple(_merge_group(key[0], groups[key]) for key in sorted(groups))


def _merge_group(name: str, members: list[SourcedRequirement]) -> MergedRequirement:
    specifier = _check_group(name, members, ())
    url = min((m.requirement.url for m in members if m.requirement.url), default=None)
    extras = frozenset(canonicalize_name(e) for m in members for e in m.requirement.extras)
    return MergedRequirement(name, extras, specifier, members[0].requirement.marker, url,
                             tuple(members))


def _check_group(name: str, members: list[SourcedRequirement],
                 constraints: tuple[SourcedRequirement, ...]) -> SpecifierSet:
    """Intersect the members' specifiers; raise ConflictError when they cannot all hold."""
    specifier = _combine(m.requirement.specifier for m in members)
    if not specifiers_satisfiable(specifier):
        raise _conflict(name, _culprits(members), constraints, "relax one of them")
    with_url = [m for m in members if m.requirement.url]
    if len({_url_identity(m.requirement.url or "") for m in with_url}) > 1:
        raise _conflict(name, with_url, constraints, "point them at the same URL")
    return specifier


def _combine(sets: Iterable[SpecifierSet]) -> SpecifierSet:
    """Intersect specifier sets with stable text: sorted, equal specifiers written once."""
    chosen: list[Specifier] = []
    for spec in sorted((spec for specifier in sets for spec in specifier), key=str):
        if spec not in chosen:
            chosen.append(spec)
    return SpecifierSet(",".join(str(spec) for spec in chosen))


def _culprits(members: list[SourcedRequirement]) -> list[SourcedRequirement]:
    """The smallest explanation: one self-contradicting line, else a clashing pair, else all."""
    for member in members:
        if not specifiers_satisfiable(member.requirement.specifier):
            return [member]
    for first, second in combinations(members, 2):
        both = [first.requirement.specifier, second.requirement.specifier]
        if not specifiers_satisfiable(_combine(both)):
            return [first, second]
    return list(members)


def _conflict(name: str, culprits: list[SourcedRequirement],
              constraints: tuple[SourcedRequirement, ...], advice: str) -> ConflictError:
    """Name each culprit line; suggest --exclude-node when a custom node is among them."""
    details = [
        f"{m.text} from {m.origin}" + (" (constraint)" if any(m is c for c in constraints) else "")
        for m in culprits
    ]
    nodes = sorted({m.origin.source.removeprefix(NODE_SOURCE_PREFIX) for m in culprits
                    if m.origin.source.startswith(NODE_SOURCE_PREFIX)})
    if nodes:
        excludes = " or ".join(f"--exclude-node {node}" for node in nodes)
        advice += f", or leave the node out with {excludes}"
    return ConflictError(name, details, hint=advice)


def _url_identity(url: str) -> str:
    """Two URLs name the same source when they differ only in an `#egg=` fragment."""
    base, _, fragment = url.partition("#")
    kept = [part for part in fragment.split("&") if part and not part.startswith("egg=")]
    return base + ("#" + "&".join(kept) if kept else "")


_BIG = 99999


def specifiers_satisfiable(specifier: SpecifierSet) -> bool:
    """Whether some version meets every specifier, decided offline.

    Candidates sit at and just around every boundary the specifiers name. A final version is
    required unless a specifier names a pre-release (uv's default). `===` compares strings,
    not versions, so a set containing it counts as satisfiable.
    """
    specs = list(specifier)
    if any(spec.operator == "===" for spec in specs):
        return True
    allow_pre = any(_boundary(spec).is_prerelease for spec in specs)
    width = max((len(_boundary(spec).release) for spec in specs), default=1) + 2
    return any(
        specifier.contains(candidate, prereleases=True)
        for candidate in _candidates(specs, width)
        if allow_pre or not candidate.is_prerelease
    )


def _boundary(spec: Specifier) -> Version:
    return Version(spec.version.removesuffix(".*"))


def _candidates(specs: list[Specifier], width: int) -> Iterator[Version]:
    """Every boundary (a prefix `1.2.*` bounds at 1.2 and 1.3), and versions next to it."""
    yield from (Version("0"), Version(str(_BIG)))
    for spec in specs:
        points = [_boundary(spec)]
        if spec.version.endswith(".*") or spec.operator == "~=":
            prefix = points[0].release[: -1 if spec.operator == "~=" else None]
            points.append(_version(points[0].epoch, (*prefix[:-1], prefix[-1] + 1)))
        for point in points:
            yield point
            yield from _neighbours(point, width)


def _neighbours(v: Version, width: int) -> Iterator[Version]:
    """Versions just above and below `v`: 1.24 -> 1.24.0.0.1, 1.24.post1, 1.23.99999..."""
    yield _version(v.epoch, v.release + (0,) * (width - len(v.release)) + (1,))
    yield _version(v.epoch, v.release)
    yield _version(v.epoch, v.release, v.pre, (v.post or 0) + 1)
    if v.dev is not None:
        yield _version(v.epoch, v.release, v.pre, v.post, v.dev + 1)
    else:
        yield _version(v.epoch, v.release, v.pre, v.post, 0)
    if v.pre is not None and v.pre[1] > 0:
        yield _version(v.epoch, v.release, (v.pre[0], v.pre[1] - 1))
    nonzero = [index for index, part in enumerate(v.release) if part]
    if nonzero:
        last = nonzero[-1]
        lower = (*v.release[:last], v.release[last] - 1) + (_BIG,) * (width - last)
        yield _version(v.epoch, lower)
    elif v.epoch:
        yield _version(v.epoch - 1, (_BIG,))


def _version(epoch: int, release: tuple[int, ...], pre: tuple[str, int] | None = None,
             post: int | None = None, dev: int | None = None) -> Version:
    text = f"{epoch}!" + ".".join(str(part) for part in release)
    text += f"{pre[0]}{pre[1]}" if pre else ""
    text += f".post{post}" if post is not None else ""
    return Version(text + (f".dev{dev}" if dev is not None else ""))
