"""Read pip-style requirement files with provenance, and merge them into one set.

Every requirement keeps the file, line and "who asked" it came from, because a conflict
between a custom node and ComfyUI is only fixable when the message names both lines.
Strict mode (ComfyUI, the Manager, the user's own files) fails on the first bad line;
lenient mode (custom nodes) skips it and reports a Diagnostic instead.
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
from packaging.version import InvalidVersion, Version

from envbuild.errors import ConflictError, RequirementFileError
from envbuild.runner import redact

NODE_SOURCE_PREFIX = "node "  # Origin.source of a custom node: "node <directory name>"


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
    """Something envbuild ignored or skipped; shown to the user, never silent."""

    origin: Origin
    message: str


@dataclass(frozen=True)
class ParsedFile:
    """Everything one requirement file (and its includes) contributed."""

    requirements: tuple[SourcedRequirement, ...]
    constraints: tuple[SourcedRequirement, ...]
    warnings: tuple[Diagnostic, ...]
    files: tuple[Path, ...]


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------

_COMMENT = re.compile(r"(^|\s)#.*$")
_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_URL_START = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|(?:git|hg|svn|bzr)\+|file:|\.\.?(?:[/\\]|$)|[/\\~]|[A-Za-z]:[/\\])"
)
_ARCHIVE = re.compile(r"\.(?:whl|zip|tar\.gz|tgz|tar\.bz2|tar\.xz|tar)$", re.IGNORECASE)
_RUN_TOGETHER = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*((?:(?:~=|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*){2,})$")
_ONE_SPEC = re.compile(r"(~=|==|!=|<=|>=|<|>)\s*([A-Za-z0-9.*+!_-]+)")
_SINGLE_EQUALS = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*=\s*([0-9][A-Za-z0-9.*+!_-]*)\s*$")

_INDEX_REASON = (
    "envbuild takes indexes from the torch profile and envbuild.toml, not from requirement files; "
    "add the index to envbuild.toml if it is needed"
)
_INSTALL_REASON = (
    "install options in requirement files do not reach uv; envbuild sets resolver options "
    "itself (see envbuild.toml)"
)
_PER_REQUIREMENT_REASON = (
    "envbuild's lock carries its own hashes and builds with uv's settings, so per-requirement "
    "options are not passed on"
)
_ALIASES = {"-i": "--index-url", "-f": "--find-links", "-r": "--requirement", "-c": "--constraint",
            "-e": "--editable"}
_INDEX_OPTIONS = frozenset({"--index-url", "--extra-index-url", "--find-links", "--no-index", "--trusted-host"})
_INSTALL_OPTIONS = frozenset({"--pre", "--prefer-binary", "--only-binary", "--no-binary", "--use-feature",
                              "--require-hashes"})
_FLAGS = frozenset({"--no-index", "--pre", "--prefer-binary", "--require-hashes"})
_LINE_OPTIONS = _INDEX_OPTIONS | _INSTALL_OPTIONS | {"--requirement", "--constraint", "--editable"}
_PER_REQUIREMENT_OPTIONS = frozenset({"--hash", "--config-settings", "-C", "--global-option", "--install-option"})


class _LineProblem(Exception):
    """A bad line: the caller raises it (strict) or turns it into a Diagnostic (lenient)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class _FileContext:
    """The file being read: where includes resolve from and what its lines become."""

    path: Path
    shown: str
    constraint: bool
    stack: tuple[Path, ...]  # real paths of the files currently open, for cycle detection


def parse_requirements_file(
    path: Path, *, source: str, lenient: bool = False, display_root: Path | None = None
) -> ParsedFile:
    """Parse a requirements file and everything it includes."""
    reader = _Reader(source, lenient, display_root)
    reader.read(path, _read_text(path, reader.shown(path)))
    return reader.result()


def parse_requirements_text(
    text: str, *, path: Path, source: str, lenient: bool = False, display_root: Path | None = None
) -> ParsedFile:
    """Parse `text` as if it were the content of `path` (includes resolve next to `path`)."""
    reader = _Reader(source, lenient, display_root)
    reader.read(path, text.removeprefix("\ufeff"))
    return reader.result()


def _read_text(path: Path, shown: str) -> str:
    """Read a file as UTF-8 text, refusing binaries early with a plain message."""
    if path.is_dir():
        raise RequirementFileError(shown, None, "is a directory, not a requirements file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RequirementFileError(shown, None, "does not exist") from None
    except OSError as exc:
        raise RequirementFileError(shown, None, f"cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in data:
        raise RequirementFileError(shown, None, "not a text requirements file (it contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RequirementFileError(shown, None, "not a text requirements file (it is not valid UTF-8)") from None


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
    start, parts = 0, []
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text), start=1):
        line = _COMMENT.sub("", raw).rstrip()
        if line.endswith("\\"):
            start = start if parts else number
            parts.append(line[:-1])
            continue
        if parts:
            parts.append(line)
            yield start, "".join(parts).strip()
            parts = []
        else:
            yield number, line.strip()
    if parts:
        yield start, "".join(parts).strip()


class _Reader:
    """Collects what a root file and its includes contribute, in read order."""

    def __init__(self, source: str, lenient: bool, display_root: Path | None) -> None:
        self.source, self.lenient, self.display_root = source, lenient, display_root
        self.requirements: list[SourcedRequirement] = []
        self.constraints: list[SourcedRequirement] = []
        self.warnings: list[Diagnostic] = []
        self.files: list[Path] = []
        self.seen: set[tuple[Path, bool]] = set()

    def shown(self, path: Path) -> str:
        return _display(path, self.display_root)

    def result(self) -> ParsedFile:
        return ParsedFile(tuple(self.requirements), tuple(self.constraints), tuple(self.warnings),
                          tuple(self.files))

    def read(self, path: Path, text: str, constraint: bool = False, stack: tuple[Path, ...] = ()) -> None:
        real = Path(os.path.realpath(path))
        self.seen.add((real, constraint))
        if path not in self.files:
            self.files.append(path)
        ctx = _FileContext(path, self.shown(path), constraint, (*stack, real))
        for number, line in _logical_lines(text):
            if not line:
                continue
            try:
                if line.startswith("-"):
                    self._options_line(ctx, number, line)
                else:
                    self._requirement_line(ctx, number, line)
            except _LineProblem as problem:
                self._problem(ctx, number, line, problem)

    def _origin(self, ctx: _FileContext, number: int) -> Origin:
        return Origin(ctx.shown, number, self.source)

    def _note(self, ctx: _FileContext, number: int, message: str) -> None:
        self.warnings.append(Diagnostic(self._origin(ctx, number), message))

    def _problem(self, ctx: _FileContext, number: int, line: str, problem: _LineProblem) -> None:
        quoted = _quote(line)
        if not self.lenient:
            raise RequirementFileError(ctx.shown, number, f"{quoted}: {problem.message}", hint=problem.hint)
        sentence = f"Skipped {quoted}: {problem.message}" + (f"; {problem.hint}" if problem.hint else "")
        end = "" if sentence.endswith(("?", ".")) else "."
        self._note(ctx, number, f"{sentence}{end} If the package is needed, add a corrected line "
                                "to your own requirements.")

    def _requirement_line(self, ctx: _FileContext, number: int, line: str) -> None:
        text, options = _split_trailing_options(line)
        requirement = _to_requirement(text, ctx.path.parent)
        ignored = _per_requirement_options(options)
        if ignored:
            self._note(ctx, number, f"Ignored {', '.join(ignored)} on `{text}`: {_PER_REQUIREMENT_REASON}.")
        target = self.constraints if ctx.constraint else self.requirements
        target.append(SourcedRequirement(requirement, self._origin(ctx, number), text))

    def _options_line(self, ctx: _FileContext, number: int, line: str) -> None:
        for name, value in _parse_options(line):
            written = _quote(f"{name} {value}" if value is not None else name)
            if name in ("--requirement", "--constraint"):
                self._include(ctx, number, str(value), ctx.constraint or name == "--constraint")
            elif name == "--editable":
                raise _LineProblem(
                    "editable installs (`-e`) cannot be locked",
                    hint="envbuild locks a virtual project; install editable packages yourself "
                    "or add a `name @ url` line",
                )
            else:
                reason = _INDEX_REASON if name in _INDEX_OPTIONS else _INSTALL_REASON
                self._note(ctx, number, f"Ignored {written}: {reason}.")

    def _include(self, ctx: _FileContext, number: int, target: str, constraint: bool) -> None:
        """Read an included file once; a missing target or a cycle is always an error."""
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", target):
            raise RequirementFileError(ctx.shown, number, f"cannot include {_quote(target)}: "
                                       "includes from URLs are not supported", hint="download the file "
                                       "and include it by path")
        path = Path(os.path.normpath(ctx.path.parent / os.path.expanduser(target)))
        real = Path(os.path.realpath(path))
        if real in ctx.stack:
            chain = [self.shown(p) for p in ctx.stack[ctx.stack.index(real):]]
            cycle = " -> ".join([*chain, self.shown(path)])
            raise RequirementFileError(ctx.shown, number, f"include cycle: {cycle}",
                                       hint="remove one of the -r/-c lines")
        if not path.exists() or path.is_dir():
            what = "is a directory" if path.exists() else "does not exist"
            raise RequirementFileError(ctx.shown, number, f"included file {_quote(target)} {what} "
                                       f"({self.shown(path)})")
        if (real, constraint) in self.seen:
            return
        self.read(path, _read_text(path, self.shown(path)), constraint, ctx.stack)


def _quote(text: str, limit: int = 200) -> str:
    """Quote a line for a message, hiding credentials and cutting very long lines."""
    shown = redact(text)
    return f"`{shown if len(shown) <= limit else shown[:limit] + '...'}`"


def _split_trailing_options(line: str) -> tuple[str, list[str]]:
    """Split `pkg==1 --hash=...` into the requirement and its option tokens (like pip)."""
    match = re.search(r"\s-", line)
    if match is None:
        return line, []
    try:
        return line[: match.start()].strip(), shlex.split(line[match.start():])
    except ValueError as exc:
        raise _LineProblem(f"its options cannot be split ({exc})") from None


def _per_requirement_options(tokens: list[str]) -> list[str]:
    """Names of the (ignored) per-requirement options; unknown options are a problem."""
    names: list[str] = []
    for token in tokens:
        if not token.startswith("-"):
            continue  # the value of the option before it
        name = token.split("=", 1)[0]
        if name not in _PER_REQUIREMENT_OPTIONS:
            raise _LineProblem(f"unknown per-requirement option {_quote(name)}",
                               hint="only --hash, --config-settings and --global-option may follow "
                               "a requirement")
        if _quote(name) not in names:
            names.append(_quote(name))
    return names


def _parse_options(line: str) -> list[tuple[str, str | None]]:
    """Split an option line into (long option name, value) pairs; unknown options fail."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise _LineProblem(f"the options cannot be split ({exc})") from None
    result: list[tuple[str, str | None]] = []
    position = 0
    while position < len(tokens):
        token = tokens[position]
        position += 1
        name, value = _split_option_token(token)
        if name not in _LINE_OPTIONS:
            raise _LineProblem(f"unknown option {_quote(name)}",
                               hint="requirement files may use -r, -c and pip's index options; "
                               "put each requirement on its own line")
        if name not in _FLAGS and value is None:
            if position >= len(tokens):
                raise _LineProblem(f"option {_quote(name)} needs a value")
            value, position = tokens[position], position + 1
        result.append((name, value))
    return result


def _split_option_token(token: str) -> tuple[str, str | None]:
    """`--x=y` -> (--x, y); `-rfile` -> (--requirement, file); `-i` -> (--index-url, None)."""
    if token.startswith("--"):
        name, equals, value = token.partition("=")
        return name, (value if equals else None)
    if token.startswith("-") and len(token) > 2:
        return _ALIASES.get(token[:2], token[:2]), token[2:]
    return _ALIASES.get(token, token), None


def _to_requirement(text: str, base: Path) -> Requirement:
    """Parse one requirement; URL and path lines get their name from #egg= or the wheel."""
    location = re.split(r";\s", text, maxsplit=1)[0].strip()
    if _URL_START.match(text) or (_ARCHIVE.search(location) and not re.search(r"[@\s]", location)):
        return _nameless_to_requirement(text, base)
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise _LineProblem(f"not a valid requirement ({str(exc).splitlines()[0]})",
                           hint=_suggest(text)) from None


def _nameless_to_requirement(text: str, base: Path) -> Requirement:
    """Turn `URL[#egg=name]` or a local path into `name @ url`, as pip would."""
    location, _, marker = (part.strip() for part in _partition_marker(text))
    url = location if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", location) and not re.match(
        r"^[A-Za-z]:[/\\]", location) else _path_to_url(location, base)
    name = _egg_name(location) or _wheel_name(location)
    if name is None:
        raise _LineProblem("a URL or path needs a package name, and envbuild cannot tell which "
                           "package it installs without building it", hint=f"write `NAME @ {redact(url)}`")
    try:
        return Requirement(f"{name} @ {url}" + (f" ; {marker}" if marker else ""))
    except InvalidRequirement as exc:
        raise _LineProblem(f"not a valid requirement ({str(exc).splitlines()[0]})") from None


def _partition_marker(text: str) -> tuple[str, str, str]:
    """Split `url ; marker` (pip needs whitespace after `;` on URL lines)."""
    parts = re.split(r";(?=\s)", text, maxsplit=1)
    return (parts[0], ";", parts[1]) if len(parts) == 2 else (text, "", "")


def _path_to_url(location: str, base: Path) -> str:
    """A local path (relative to the file that names it) as a file:// URL for uv."""
    path, hash_sign, fragment = location.partition("#")
    absolute = Path(os.path.abspath(base / os.path.expanduser(path)))
    return absolute.as_uri() + (f"#{fragment}" if hash_sign else "")


def _egg_name(location: str) -> str | None:
    fragment = location.partition("#")[2]
    for part in fragment.split("&"):
        key, _, value = part.partition("=")
        if key == "egg" and _NAME.match(value):
            return value
    return None


def _wheel_name(location: str) -> str | None:
    """PEP 427: `name-version(-build)?-python-abi-platform.whl` names its project."""
    filename = unquote(urlsplit(location).path if "://" in location else location.partition("#")[0])
    filename = re.split(r"[/\\]", filename)[-1]
    if not filename.lower().endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    return parts[0] if len(parts) in (5, 6) and _NAME.match(parts[0]) else None


def _suggest(text: str) -> str | None:
    """An honest guess for two common slips: `a<2>=1` (missing comma) and `a=1` (single =)."""
    guess = None
    match = _RUN_TOGETHER.match(text)
    if match and "," not in match.group(3):
        specs = sorted(_ONE_SPEC.findall(match.group(3)), key=lambda s: (not s[0].startswith(">"), s[0]))
        guess = f"{match.group(1)}{match.group(2) or ''}" + ",".join(op + version for op, version in specs)
    elif (single := _SINGLE_EQUALS.match(text)) is not None:
        guess = f"{single.group(1)}=={single.group(2)}"
    if guess is None:
        return None
    try:
        Requirement(guess)
    except InvalidRequirement:
        return None
    return f"did you mean `{guess}`?"


# ---------------------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergedRequirement:
    """All inputs for one (name, marker), combined into one requirement."""

    name: str
    extras: frozenset[str]
    specifier: SpecifierSet
    marker: Marker | None
    url: str | None
    origins: tuple[SourcedRequirement, ...]

    def pep508(self) -> str:
        """Deterministic PEP 508 text; a URL wins over specifiers (PEP 508 allows only one)."""
        head = self.name + (f"[{','.join(sorted(self.extras))}]" if self.extras else "")
        if self.url is not None:
            return f"{head} @ {self.url}" + (f" ; {self.marker}" if self.marker else "")
        body = head + ",".join(sorted(str(spec) for spec in self.specifier))
        return body + (f"; {self.marker}" if self.marker else "")


@dataclass(frozen=True)
class MergeResult:
    """Merged requirements and constraints, sorted by (name, marker)."""

    requirements: tuple[MergedRequirement, ...]
    constraints: tuple[MergedRequirement, ...]

    def names(self) -> frozenset[str]:
        return frozenset(merged.name for merged in self.requirements)


def merge(
    requirements: Iterable[SourcedRequirement], constraints: Iterable[SourcedRequirement] = ()
) -> MergeResult:
    """Merge per (name, marker); the result does not depend on the input order.

    Different markers stay separate entries: uv combines them per environment.
    """
    merged = _merge_groups(requirements)
    merged_constraints = _merge_groups(constraints)
    by_key = {(m.name, str(m.marker or "")): m for m in merged}
    for constraint in merged_constraints:
        requirement = by_key.get((constraint.name, str(constraint.marker or "")))
        if requirement is not None:
            _check_constraint(requirement, constraint)
    return MergeResult(merged, merged_constraints)


def _merge_groups(items: Iterable[SourcedRequirement]) -> tuple[MergedRequirement, ...]:
    groups: dict[tuple[str, str], list[SourcedRequirement]] = {}
    for item in items:
        key = (canonicalize_name(item.requirement.name), str(item.requirement.marker or ""))
        groups.setdefault(key, []).append(item)
    return tuple(_merge_group(key[0], groups[key]) for key in sorted(groups))


def _merge_group(name: str, members: list[SourcedRequirement]) -> MergedRequirement:
    specifier = _combine(member.requirement.specifier for member in members)
    if not specifiers_satisfiable(specifier):
        raise _conflict(name, _culprits(members), ())
    url_members = [m for m in members if m.requirement.url]
    if len({_url_identity(m.requirement.url or "") for m in url_members}) > 1:
        raise _conflict(name, url_members, (), what="point them at the same URL")
    url = min((m.requirement.url or "" for m in url_members), default=None)
    extras = frozenset(canonicalize_name(extra) for m in members for extra in m.requirement.extras)
    return MergedRequirement(name, extras, specifier, members[0].requirement.marker, url, tuple(members))


def _check_constraint(requirement: MergedRequirement, constraint: MergedRequirement) -> None:
    """A constraint must leave some version (and the same URL) for its requirement."""
    members = [*requirement.origins, *constraint.origins]
    if not specifiers_satisfiable(_combine([requirement.specifier, constraint.specifier])):
        raise _conflict(requirement.name, _culprits(members), constraint.origins)
    if requirement.url and constraint.url and _url_identity(requirement.url) != _url_identity(constraint.url):
        url_members = [m for m in members if m.requirement.url]
        raise _conflict(requirement.name, url_members, constraint.origins, what="point them at the same URL")


def _combine(sets: Iterable[SpecifierSet]) -> SpecifierSet:
    """Intersect specifier sets with stable text: sorted, and equal specifiers written once."""
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
        if not specifiers_satisfiable(_combine([first.requirement.specifier, second.requirement.specifier])):
            return [first, second]
    return list(members)


def _conflict(
    name: str,
    culprits: list[SourcedRequirement],
    constraints: tuple[SourcedRequirement, ...],
    what: str = "relax one of them",
) -> ConflictError:
    details = [
        f"{m.text} from {m.origin}" + (" (constraint)" if any(m is c for c in constraints) else "")
        for m in culprits
    ]
    nodes = sorted({m.origin.source.removeprefix(NODE_SOURCE_PREFIX) for m in culprits
                    if m.origin.source.startswith(NODE_SOURCE_PREFIX)})
    if nodes:
        what += ", or leave the node out with " + " or ".join(f"--exclude-node {n}" for n in nodes)
    return ConflictError(name, details, hint=what)


def _url_identity(url: str) -> str:
    """Two URLs are the same source when they differ only in an `#egg=` fragment."""
    base, _, fragment = url.partition("#")
    kept = [part for part in fragment.split("&") if part and not part.startswith("egg=")]
    return base + ("#" + "&".join(kept) if kept else "")


# ---------------------------------------------------------------------------------------
# Satisfiability
# ---------------------------------------------------------------------------------------

_BIG = 99999


def specifiers_satisfiable(specifier: SpecifierSet) -> bool:
    """Whether some version meets every specifier, decided offline.

    Candidates sit at and just around every boundary the specifiers name; a final version
    is required unless a specifier names a pre-release (what uv allows by default). `===`
    compares strings, not versions, so any set containing it counts as satisfiable.
    """
    specs = list(specifier)
    if any(spec.operator == "===" for spec in specs):
        return True
    allow_pre = any(_boundary(spec).is_prerelease for spec in specs)
    width = max((len(_boundary(spec).release) for spec in specs), default=1) + 2
    for candidate in _candidates(specs, width):
        if (allow_pre or not candidate.is_prerelease) and specifier.contains(candidate, prereleases=True):
            return True
    return False


def _boundary(spec: Specifier) -> Version:
    return Version(spec.version.removesuffix(".*"))


def _candidates(specs: list[Specifier], width: int) -> Iterator[Version]:
    yield Version("0")
    yield Version(str(_BIG))
    for spec in specs:
        point = _boundary(spec)
        points = [point]
        if spec.version.endswith(".*") or spec.operator == "~=":
            prefix = point.release if spec.version.endswith(".*") else point.release[:-1]
            points.append(_version(point.epoch, (*prefix[:-1], prefix[-1] + 1)))
        for each in points:
            yield each
            yield from _above(each, width)
            yield from _below(each, width)


def _above(version: Version, width: int) -> Iterator[Version]:
    """Versions just above `version`: a longer release, its final release, the next post/dev."""
    release = version.release + (0,) * (width - len(version.release))
    yield _version(version.epoch, (*release, 1))
    yield _version(version.epoch, version.release)
    yield _version(version.epoch, version.release, version.pre, (version.post or 0) + 1)
    if version.dev is not None:
        yield _version(version.epoch, version.release, version.pre, version.post, version.dev + 1)


def _below(version: Version, width: int) -> Iterator[Version]:
    """Versions just below `version`: 1.24 -> 1.23.99999..., and its .dev0 / previous pre."""
    release = version.release
    nonzero = [index for index, part in enumerate(release) if part]
    if nonzero:
        last = nonzero[-1]
        lower = (*release[:last], release[last] - 1) + (_BIG,) * (width - last)
        yield _version(version.epoch, lower)
    elif version.epoch:
        yield _version(version.epoch - 1, (_BIG,))
    if version.dev is None:
        yield _version(version.epoch, release, version.pre, version.post, 0)
    if version.pre is not None and version.pre[1] > 0:
        yield _version(version.epoch, release, (version.pre[0], version.pre[1] - 1))


def _version(
    epoch: int,
    release: tuple[int, ...],
    pre: tuple[str, int] | None = None,
    post: int | None = None,
    dev: int | None = None,
) -> Version:
    text = f"{epoch}!" + ".".join(str(part) for part in release)
    text += f"{pre[0]}{pre[1]}" if pre else ""
    text += f".post{post}" if post is not None else ""
    text += f".dev{dev}" if dev is not None else ""
    try:
        return Version(text)
    except InvalidVersion:  # pragma: no cover - every part above is a valid number
        return Version("0")
