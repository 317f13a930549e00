"""What a custom node's install.py would install, read without running it.

The Manager and comfy-cli run a node's `install.py` once, when they install the node; envbuild never
runs it (the lock decides every package, and the script would run with the user's rights). Some
nodes do real work there: ComfyUI-Frame-Interpolation installs its whole requirement list from it,
ComfyUI-ReActor its onnxruntime, ComfyUI-Impact-Pack clones its sub-pack. So envbuild reads the
script's syntax tree (`ast`: nothing is imported, executed or evaluated) and reports what it hands
to pip and git, for `lock` and `node list` to say what the lock does not hold.

What is read:
- processes: `subprocess.run/call/check_call/check_output/Popen`, `os.system`, `os.popen` and
  `pip.main`, with an argument list (`[sys.executable, "-m", "pip", "install", ...]`, also a list
  bound to a name and extended: `pip_install + ["-r", "requirements.txt"]`) or a command string
  (plain or an f-string: `f'"{sys.executable}" -m pip install {package}'`); `launch.run_pip("install
  X", ...)` (A1111's helper) and a `pip_install(...)` the script does not define;
- the script's own functions that pass their parameters on to such a call (`def run_pip(*args)`,
  `def process_wrap(cmd_str, cwd=None)`): each call of them is read with its arguments bound;
- what pip gets: `-r FILE` (a requirement file), package names, and the lines of a file opened with
  `open(FILE)` and handed to pip one by one (that file counts as a requirement file);
- values: string constants assigned to a name anywhere in the script (every value a name is given
  counts, so `ort = "onnxruntime-gpu"` and a later `ort = "onnxruntime"` give both),
  `a if c else b` (both), `os.path.join(os.path.dirname(__file__), "x")` and
  `Path(__file__).parent / "x"` (paths in the node's folder), a subprocess's `cwd=`;
- repositories cloned: `git clone URL [DIR]` as a command, `git.Repo.clone_from(URL, DIR)`;
- other Python scripts it runs (`[sys.executable, "install.py"]`, with their `cwd`); one inside the
  node's folder (a sub-pack cloned there) is read too, one level deep.

Packages that one call installs one of (`ort` is "onnxruntime-gpu" or "onnxruntime") are one choice:
held when either is in the lock. Then `uncovered` compares the findings with what the lock (or the
node's own requirement files) holds, and `describe` says the rest in one warning per node.

Limits: the reading ignores control flow (a value assigned under a condition counts as if always)
and follows no import (a helper from another module is unseen); nothing is computed (string methods
other than strip/lower, names built in loops, values from the machine such as torch's CUDA version).
Anything handed to pip or git that is not one of the above is a "dynamic" finding, said as "install.py
does something envbuild cannot read statically: review it". A script that does nothing this reader
recognises yields no finding: it may still download models or patch files (not envbuild's business).
The reading is bounded (1 MiB, a budget of calls followed and expressions read, alternatives per
value), so a hostile script cannot hang `lock`; a script that is a link out of the node's folder is
not read, and values it names reach messages with credentials hidden and control characters escaped.
"""

from __future__ import annotations

import ast
import posixpath
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

SCRIPT_NAME = "install.py"
SIZE_LIMIT = 1024 * 1024  # a node's install.py is a few KiB; a bigger one is not read (said as dynamic)
_MAX_ALTERNATIVES = 8  # values one expression may have (a name assigned in several places)
_MAX_DEPTH = 40  # nested expressions and calls followed
_CALL_DEPTH = 4  # the script's own functions followed into, one inside another
_BUDGET = 10_000  # calls looked at in all (functions calling each other must not make the reading explode)
_PIP_OPTIONS_WITH_VALUE = {
    "-c", "--constraint", "-e", "--editable", "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
    "-t", "--target", "--prefix", "--root", "--src", "--upgrade-strategy", "--python-version", "--platform",
    "--implementation", "--abi", "--only-binary", "--no-binary", "--progress-bar", "--cache-dir", "--log",
    "--proxy", "--retries", "--timeout", "--trusted-host", "--cert", "--client-cert", "--config-settings",
    "-C", "--global-option", "--report", "--root-user-action",
}
_GIT_CLONE_OPTIONS_WITH_VALUE = {"-b", "--branch", "--depth", "-o", "--origin", "-c", "--config", "--reference",
                                 "--template", "-u", "--upload-pack", "-j", "--jobs", "--filter", "--separate-git-dir"}
_SUBPROCESS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")


class Finding(NamedTuple):
    """One thing the script hands to pip or git.

    kind: "requirements" (a requirement file, `value` relative to the node's folder), "package" (a
    requirement or a path pip installs), "clone" (`value` the URL, `target` the folder in the node),
    "script" (another Python script it runs, relative to the node's folder) or "dynamic" (`value`
    the code envbuild cannot read)."""

    kind: str
    value: str
    line: int
    target: str = ""
    choice: str = ""  # packages of one choice share it (`ort` is onnxruntime-gpu or onnxruntime): one of them


class ScriptReport(NamedTuple):
    path: Path
    findings: tuple[Finding, ...]


# -- values -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Str:
    text: str


@dataclass(frozen=True)
class _NodePath:
    rel: str  # posix, relative to the node's folder ("" is the folder itself)


@dataclass(frozen=True)
class _Handle:  # a file opened with open(path)
    path: object


@dataclass(frozen=True)
class _Lines:  # the lines of a file (iterated, readlines(), one line stripped)
    path: object


@dataclass(frozen=True)
class _Seq:
    items: tuple[object, ...]


@dataclass(frozen=True)
class _Exe:  # sys.executable
    pass


@dataclass(frozen=True)
class _Template:  # an f-string: literal text and values
    parts: tuple[object, ...]


@dataclass(frozen=True)
class _Param:  # a parameter of the function being read, not bound to a call's argument
    name: str


@dataclass(frozen=True)
class _Unknown:
    code: str


_NONE = _Str("\x00none")  # the constant None (a cwd=None default)
_CYCLE = _Unknown("\x00cycle")  # a name read while its own value is being read
_Sub = Callable[[ast.AST], list[object]]


def read_install_script(path: Path, confine_to: Path | None = None) -> ScriptReport:
    """What `path` (a node's install.py) hands to pip and git; never raises for the script's content.
    `confine_to`: the node's folder; a script that is a link out of it is not read (what it names would
    end up in committed warnings: a link to another file of this machine must not)."""
    import os

    from envbuild.core.safeio import read_regular_file

    if confine_to is not None:
        real, root = os.path.realpath(path), os.path.realpath(confine_to)
        if os.path.commonpath([real, root]) != root:
            return ScriptReport(path, (Finding("dynamic", "it is a link out of the node's folder, not read", 0),))
    try:
        source = read_regular_file(path, SIZE_LIMIT).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return ScriptReport(path, (Finding("dynamic", f"the file cannot be read ({reason})", 0),))
    return ScriptReport(path, analyse(source))


def analyse(source: str) -> tuple[Finding, ...]:
    """The findings of one script's text, in line order, each once."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return (Finding("dynamic", f"it is not valid Python ({exc.msg})", exc.lineno or 0),)
    except (RecursionError, MemoryError, ValueError):
        return (Finding("dynamic", "it is too deeply nested to read", 0),)
    try:
        found = list(_Reader(tree).findings())
    except RecursionError:
        return (Finding("dynamic", "it is too deeply nested to read", 0),)
    first: dict[tuple[str, str, str], Finding] = {}
    for finding in sorted(found, key=lambda f: (f.line, f.kind, f.value)):
        first.setdefault((finding.kind, finding.value, finding.target), finding)  # said once, at its first line
    return tuple(first.values())


class _Reader:
    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.assigned: dict[str, list[tuple[ast.AST, str]]] = {}  # name -> (value node, how) everywhere
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.subprocess_names: set[str] = set()  # `from subprocess import run` and the like
        self.budget = _BUDGET
        self.evaluations = 5 * _BUDGET  # expressions looked at in all (x2 = x1 + x1, x3 = x2 + x2, ...)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions.setdefault(node.name, node)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    self._bind(target, node.value, "value")
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                self._bind(node.target, node.value, "value")
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                self._bind(node.target, node.iter, "element")
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        self._bind(item.optional_vars, item.context_expr, "value")
            elif isinstance(node, ast.ImportFrom) and node.module == "subprocess":
                self.subprocess_names.update(alias.asname or alias.name for alias in node.names
                                             if alias.name in _SUBPROCESS)

    def _bind(self, target: ast.AST, value: ast.AST, how: str) -> None:
        if isinstance(target, ast.Name):
            self.assigned.setdefault(target.id, []).append((value, how))

    # -- walking the calls ---------------------------------------------------------------------------

    def findings(self) -> Iterator[Finding]:
        yield from self._visit(self.tree.body, {}, 0, params=frozenset(), site=None)
        for function in self.functions.values():  # a function never called here may still be (by name)
            yield from self._visit(function.body, {}, 0, params=_params(function), site=None)

    def _visit(self, body: Sequence[ast.stmt], bindings: dict[str, list[object]], depth: int,
               params: frozenset[str], site: int | None) -> Iterator[Finding]:
        """`site`: the line of the call that bound this function's parameters (what a finding names)."""
        for call in _calls(body):
            self.budget -= 1
            if self.budget < 0:
                if self.budget == -1:
                    yield Finding("dynamic", "it calls its own functions too many times over to read it all",
                                  call.lineno)
                return
            command = self._command(call, bindings, params)
            if command is not None:
                yield from (f._replace(line=site, choice=f"{site}/{f.choice}" if f.choice else "")
                            if site is not None else f for f in command)
                continue
            function = self.functions.get(call.func.id) if isinstance(call.func, ast.Name) else None
            if function is not None and depth < _CALL_DEPTH:
                inner = self._bind_call(function, call, bindings, params)
                yield from self._visit(function.body, inner, depth + 1, params=_params(function),
                                       site=site if site is not None or not (call.args or call.keywords)
                                       else call.lineno)

    def _bind_call(self, function: ast.FunctionDef | ast.AsyncFunctionDef, call: ast.Call,
                   bindings: dict[str, list[object]], params: frozenset[str]) -> dict[str, list[object]]:
        """The function's parameters bound to the call's arguments (defaults where none is given)."""
        args = function.args
        positional = [*args.posonlyargs, *args.args]
        values: dict[str, list[object]] = {}
        given = [a for a in call.args if not isinstance(a, ast.Starred)]
        for index, parameter in enumerate(positional):
            if index < len(given):
                values[parameter.arg] = self.value(given[index], bindings, params)
        rest = given[len(positional):]
        if args.vararg is not None:
            values[args.vararg.arg] = [_Seq(combo) for combo in _product([self.value(a, bindings, params)
                                                                           for a in rest])]
        for keyword in call.keywords:
            if keyword.arg is not None:
                values[keyword.arg] = self.value(keyword.value, bindings, params)
        defaults = args.defaults
        for parameter, default in zip(positional[len(positional) - len(defaults):], defaults, strict=True):
            values.setdefault(parameter.arg, self.value(default, {}, frozenset()))
        for parameter, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if kw_default is not None:
                values.setdefault(parameter.arg, self.value(kw_default, {}, frozenset()))
        return values

    # -- one call: is it a command, and what does it do ----------------------------------------------

    def _command(self, call: ast.Call, bindings: dict[str, list[object]], params: frozenset[str],
                 ) -> list[Finding] | None:
        """The findings of a process, pip or clone call (None: the call is none of these)."""
        func, line = call.func, call.lineno
        dotted = _dotted(func)
        keywords = {k.arg: k.value for k in call.keywords if k.arg is not None}
        cwd: list[object] = self.value(keywords["cwd"], bindings, params) if "cwd" in keywords else [_NONE]
        if dotted.endswith("clone_from") and len(call.args) >= 1:  # git.Repo.clone_from(url, to_path)
            urls = self.value(call.args[0], bindings, params)
            targets: list[object] = self.value(call.args[1], bindings, params) if len(call.args) > 1 else [_Str("")]
            return self._unless_unbound([*_clones(urls, targets, [_NONE], line, _code(call))], urls + targets)
        helper = dotted.rsplit(".", 1)[-1]
        if helper in ("run_pip", "pip_install") and (dotted == "launch.run_pip" or helper not in self.functions):
            # A1111's run_pip(command, description): only the first argument is pip's
            arguments = [self.value(a, bindings, params) for a in call.args[:1 if helper == "run_pip" else None]]
            lead: list[object] = [_Str("pip"), *([] if helper == "run_pip" else [_Str("install")])]
            commands = [[*lead, *self._split(list(combo))] for combo in _product(arguments)]
            return self._unless_unbound(_interpret_all(commands, cwd, line, _code(call)), _flat(arguments))
        if dotted in ("pip.main", "pip._internal.main", "pip._internal.cli.main.main") and call.args:
            values = self.value(call.args[0], bindings, params)
            return self._unless_unbound(
                _interpret_all([[_Str("pip"), *self._split([v])] for v in values], cwd, line, _code(call)), values)
        is_process = (dotted in ("os.system", "os.popen", "os.execv", "os.execl", "os.spawnv")
                      or (dotted.startswith("subprocess.") and dotted.split(".")[-1] in _SUBPROCESS)
                      or (isinstance(func, ast.Name) and func.id in self.subprocess_names))
        if not is_process:
            return None
        if not call.args and "args" not in keywords:
            return []
        first = call.args[0] if call.args else keywords["args"]
        if dotted in ("os.execv", "os.spawnv"):
            first = call.args[1] if len(call.args) > 1 else first
        values = self.value(first, bindings, params)
        return self._unless_unbound(_interpret_all([self._split([v]) for v in values], cwd, line, _code(call)),
                                    [*values, *cwd])

    def _unless_unbound(self, found: list[Finding], values: Sequence[object]) -> list[Finding]:
        """A call inside a function whose command is one of its parameters is read at each call of the
        function instead (with the arguments bound), not here."""
        return [] if any(_mentions_param(v) for v in values) else found

    def _split(self, values: Sequence[object]) -> list[object]:
        """An argument list or a command string as a flat list of arguments."""
        out: list[object] = []
        for value in values:
            if isinstance(value, _Seq):
                for item in value.items:
                    out.extend(self._split([item]) if isinstance(item, _Seq) else [item])
            elif isinstance(value, (_Str, _Template)):
                out.extend(_shell_words(value))
            else:
                out.append(value)
        return out

    # -- values --------------------------------------------------------------------------------------

    def value(self, node: ast.AST, bindings: dict[str, list[object]], params: frozenset[str],
              depth: int = 0, seen: frozenset[str] = frozenset()) -> list[object]:
        """The values `node` may have (at most a few), as far as they can be known without running it."""
        self.evaluations -= 1
        if depth > _MAX_DEPTH or self.evaluations < 0:  # a value built from itself many times over: unknown
            return [_Unknown("a value too intricate to read")]
        values = self._value(node, bindings, params, depth + 1, seen)
        return list(dict.fromkeys(values))[:_MAX_ALTERNATIVES] or [_Unknown(_code(node))]

    def _value(self, node: ast.AST, bindings: dict[str, list[object]], params: frozenset[str], depth: int,
               seen: frozenset[str]) -> list[object]:
        def sub(child: ast.AST) -> list[object]:
            return self.value(child, bindings, params, depth, seen)

        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return [_Str(node.value)]
            return [_NONE] if node.value is None else [_Unknown(_code(node))]
        if isinstance(node, ast.Name):
            return self._name(node, bindings, params, depth, seen)
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted == "sys.executable":
                return [_Exe()]
            if node.attr == "parent" and _is_file_path(node.value):
                return [_NodePath("")]
            return [_Unknown(_code(node))]
        if isinstance(node, ast.IfExp):
            return [*sub(node.body), *sub(node.orelse)]
        if isinstance(node, (ast.List, ast.Tuple)):  # every combination of its elements' values
            variants: list[tuple[object, ...]] = [()]
            for element in node.elts:
                if isinstance(element, ast.Starred):
                    spread = [v.items if isinstance(v, _Seq) else (v,) for v in sub(element.value)]
                else:
                    spread = [(v,) for v in sub(element)]
                variants = [(*v, *s) for v in variants for s in spread][:_MAX_ALTERNATIVES]
            return [_Seq(v) for v in variants]
        if isinstance(node, ast.JoinedStr):
            return _templates(node, sub)
        if isinstance(node, ast.BinOp):
            return self._binop(node, sub)
        if isinstance(node, ast.Call):
            return self._call_value(node, sub)
        if isinstance(node, ast.Subscript):  # a[...]: nothing known, unless it is a line of a file
            return [_Unknown(_code(node))]
        return [_Unknown(_code(node))]

    def _name(self, node: ast.Name, bindings: dict[str, list[object]], params: frozenset[str], depth: int,
              seen: frozenset[str]) -> list[object]:
        name = node.id
        if name in bindings:
            return bindings[name]
        if name in params:
            return [_Param(name)]
        if name == "__file__":
            return [_NodePath(SCRIPT_NAME)]
        if name in seen:
            return [_CYCLE]  # x = x.strip(): adds nothing to what x is otherwise given
        if name not in self.assigned:
            return []  # unknown (the caller says so)
        out: list[object] = []
        for value_node, how in self.assigned[name]:
            for value in self.value(value_node, bindings, params, depth, seen | {name}):
                out.append(_element(value) if how == "element" else value)
        return [v for v in out if v is not _CYCLE] or [_CYCLE]

    def _binop(self, node: ast.BinOp, sub: _Sub) -> list[object]:
        out: list[object] = []
        for left in sub(node.left):
            for right in sub(node.right):
                if left is _CYCLE or right is _CYCLE:
                    out.append(_CYCLE)
                    continue
                if isinstance(node.op, ast.Add) and isinstance(left, _Seq) and isinstance(right, _Seq):
                    out.append(_Seq(left.items + right.items))
                elif isinstance(node.op, ast.Add) and isinstance(left, _Str) and isinstance(right, _Str):
                    out.append(_Str(left.text + right.text))
                elif isinstance(node.op, ast.Add) and _textual(left) and _textual(right):
                    out.append(_Template((left, right)))
                elif isinstance(node.op, ast.Div) and isinstance(left, _NodePath) and isinstance(right, _Str):
                    out.append(_node_path(posixpath.join(left.rel, right.text)))
                else:
                    out.append(_Unknown(_code(node)))
        return out

    def _call_value(self, node: ast.Call, sub: _Sub) -> list[object]:
        dotted = _dotted(node.func)
        args = node.args
        if dotted in ("os.path.dirname", "path.dirname") and len(args) == 1:
            return [_node_path(posixpath.dirname(v.rel)) if isinstance(v, _NodePath) else _Unknown(_code(node))
                    for v in sub(args[0])]
        if dotted in ("os.path.realpath", "os.path.abspath", "os.path.normpath", "Path", "pathlib.Path", "str",
                      "os.fspath") and len(args) == 1:
            return sub(args[0])
        if dotted in ("os.path.join", "path.join") and args:
            return _joined([sub(a) for a in args], node)
        if dotted == "open" and args:
            return [_Handle(v) for v in sub(args[0])]
        if isinstance(node.func, ast.Attribute):
            method = node.func.attr
            owners = sub(node.func.value)
            if all(o is _CYCLE for o in owners):
                return [_CYCLE]
            if method in ("resolve", "absolute", "expanduser") and not args:
                return owners
            if method in ("joinpath",) and args:
                return _joined([owners, *(sub(a) for a in args)], node)
            if method in ("readlines", "splitlines"):
                return [_Lines(o.path) if isinstance(o, (_Handle, _Lines)) else _Unknown(_code(node)) for o in owners]
            if method == "read" and not args:
                return [_Lines(o.path) if isinstance(o, _Handle) else _Unknown(_code(node)) for o in owners]
            if method in ("strip", "rstrip", "lstrip", "lower"):
                return [_Str(getattr(o.text, method)(*(a.value for a in args if isinstance(a, ast.Constant))))
                        if isinstance(o, _Str) and all(isinstance(a, ast.Constant) for a in args)
                        else o if isinstance(o, _Lines) else _Unknown(_code(node)) for o in owners]
            if method == "split" and not args:
                return [_Seq(tuple(_Str(w) for w in o.text.split())) if isinstance(o, _Str) else _Unknown(_code(node))
                        for o in owners]
        return [_Unknown(_code(node))]




def _params(function: ast.FunctionDef | ast.AsyncFunctionDef) -> frozenset[str]:
    args = function.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return frozenset(names)


def _calls(body: Sequence[ast.stmt]) -> Iterator[ast.Call]:
    """Every call in `body`, in source order, not inside a nested function or class."""
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Call):
            yield node
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _is_file_path(node: ast.AST) -> bool:
    """`Path(__file__)` (or `.resolve()`/`.absolute()` of it)."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("resolve", "absolute")):
        return _is_file_path(node.func.value)
    return (isinstance(node, ast.Call) and _dotted(node.func) in ("Path", "pathlib.Path") and len(node.args) == 1
            and isinstance(node.args[0], ast.Name) and node.args[0].id == "__file__")


def _code(node: ast.AST, limit: int = 80) -> str:
    try:
        text = " ".join(ast.unparse(node).split())
    except (ValueError, RecursionError):
        text = "..."
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _node_path(rel: str) -> object:
    normal = posixpath.normpath(rel) if rel else ""
    if normal == ".":
        return _NodePath("")
    if normal.startswith(("../", "/")) or normal == "..":
        return _Unknown(f"a path outside the node's folder ({normal})")
    return _NodePath(normal)


def _joined(parts: list[list[object]], node: ast.AST) -> list[object]:
    firsts = parts[0]
    rest = parts[1:]
    if len(firsts) != 1 or any(len(p) != 1 or not isinstance(p[0], _Str) for p in rest):
        return [_Unknown(_code(node))]
    tail = posixpath.join(*(p[0].text for p in rest if isinstance(p[0], _Str))) if rest else ""
    first = firsts[0]
    if isinstance(first, _NodePath):
        return [_node_path(posixpath.join(first.rel, tail) if tail else first.rel)]
    if isinstance(first, _Str):
        return [_Str(posixpath.join(first.text, tail) if tail else first.text)]
    return [_Unknown(_code(node))]


def _element(value: object) -> object:
    """One element of an iterated value: a line of a file, an item of a list."""
    if isinstance(value, (_Handle, _Lines)):
        return _Lines(value.path)
    if isinstance(value, _Seq) and len(value.items) == 1:
        return value.items[0]
    if isinstance(value, _Seq) and value.items and all(isinstance(i, _Str) for i in value.items):
        return _Seq(value.items)  # several packages, one per iteration: read as a list
    return _Unknown("an element of a collection")


def _textual(value: object) -> bool:
    return not isinstance(value, (_Seq, _Handle))


def _templates(node: ast.JoinedStr, sub: _Sub) -> list[object]:
    """An f-string's possible texts: its parts, each formatted value as each of its values."""
    variants: list[tuple[object, ...]] = [()]
    for part in node.values:
        if isinstance(part, ast.Constant) and isinstance(part.value, str):
            options: list[object] = [_Str(part.value)]
        elif isinstance(part, ast.FormattedValue):
            options = sub(part.value)
        else:
            options = [_Unknown(_code(part))]
        variants = [(*v, o) for v in variants for o in options][:_MAX_ALTERNATIVES]
    return [_Template(v) for v in variants]


def _product(values: list[list[object]]) -> list[tuple[object, ...]]:
    combos: list[tuple[object, ...]] = [()]
    for alternatives in values:
        combos = [(*c, a) for c in combos for a in alternatives][:_MAX_ALTERNATIVES]
    return combos


def _flat(values: list[list[object]]) -> list[object]:
    return [v for alts in values for v in alts]


def _mentions_param(value: object) -> bool:
    if isinstance(value, _Param):
        return True
    if isinstance(value, _Seq):
        return any(_mentions_param(i) for i in value.items)
    if isinstance(value, _Template):
        return any(_mentions_param(p) for p in value.parts)
    if isinstance(value, (_Lines, _Handle)):
        return _mentions_param(value.path)
    return False


def _shell_words(value: object) -> list[object]:
    """A command string split into words as a shell would (quotes dropped); a word made of text and a
    value not known (`cupy-cuda{ver}`) is unknown; a word that is one value is that value."""
    parts = value.parts if isinstance(value, _Template) else (value,)
    flat: list[object] = []
    for part in parts:
        if isinstance(part, _Template):
            flat.extend(part.parts)
        elif isinstance(part, _Str) and part is not _NONE:
            flat.append(part)
        else:
            flat.append(part)
    words: list[list[object]] = []
    current: list[object] = []
    for part in flat:
        if isinstance(part, _Str):
            text = part.text.replace('"', "").replace("'", "")
            pieces = re.split(r"(\s+)", text)
            for piece in pieces:
                if not piece:
                    continue
                if piece.isspace():
                    if current:
                        words.append(current)
                    current = []
                else:
                    current.append(_Str(piece))
        else:
            current.append(part)
    if current:
        words.append(current)
    out: list[object] = []
    for word in words:
        if all(isinstance(p, _Str) for p in word):
            out.append(_Str("".join(p.text for p in word if isinstance(p, _Str))))
        elif len(word) == 1:
            out.append(word[0])
        else:
            out.append(_Unknown("".join(p.text if isinstance(p, _Str) else "{" + _shown(p) + "}" for p in word)))
    return out


# -- a command's meaning --------------------------------------------------------------------------------

def _interpret_all(commands: list[list[object]], cwd: list[object], line: int, code: str) -> list[Finding]:
    """Every alternative of one call. Where the alternatives differ only in the package at one place
    (`run_pip(ort)`, `ort` one of two names), those packages are one choice: the script installs one."""
    variants: list[list[Finding]] = []
    for command in commands[:_MAX_ALTERNATIVES]:
        for where in cwd[:_MAX_ALTERNATIVES]:
            variants.append([f for piece in _pieces(command) for f in _interpret(piece, where, line, code)])
    if len(variants) > 1 and len({len(v) for v in variants}) == 1:
        for index in range(len(variants[0])):
            column = [v[index] for v in variants]
            names = {f.value for f in column if f.kind == "package"}
            if len(names) > 1:
                key = f"{line}:{code}:{index}"
                for v in variants:
                    if v[index].kind == "package":
                        v[index] = v[index]._replace(choice=key)
    return [f for v in variants for f in v]


def _pieces(command: list[object]) -> Iterator[list[object]]:
    """A shell command line cut at `&&`, `;`, `|`: each piece is one command."""
    current: list[object] = []
    for word in command:
        if isinstance(word, _Str) and word.text in _SEPARATORS:
            yield current
            current = []
        else:
            current.append(word)
    yield current


def _interpret(words: list[object], cwd: object, line: int, code: str) -> list[Finding]:
    texts = [w.text if isinstance(w, _Str) else None for w in words]
    for index, text in enumerate(texts):
        following = texts[index + 1:index + 3]
        if text == "-m" and following[:1] in (["pip"], ["pip3"]) and following[1:] == ["install"]:
            return _pip_install(words[index + 3:], cwd, line)
        if text is not None and posixpath.basename(text) in ("pip", "pip3", "pip.exe") and following[:1] == ["install"]:
            return _pip_install(words[index + 2:], cwd, line)
        if text is not None and posixpath.basename(text) in ("git", "git.exe") and following[:1] == ["clone"]:
            return _git_clone(words[index + 2:], cwd, line)
    if words and isinstance(words[0], _Exe) and len(words) > 1:
        target = words[1]
        if isinstance(target, _Str) and target.text.endswith(".py"):
            return [Finding("script", _in_cwd(target.text, cwd) or target.text, line)]
        if isinstance(target, _NodePath) and target.rel.endswith(".py"):
            return [Finding("script", target.rel, line)]
        if isinstance(target, _Str) and target.text.startswith("-"):
            return []  # python -c ..., python -m something else: not an installer envbuild knows
        return [Finding("dynamic", f"runs Python with `{_shown(target)}` ({code})", line)]
    if words and not isinstance(words[0], _Str):
        return [Finding("dynamic", f"runs a command envbuild cannot read ({code})", line)]
    return []


def _pip_install(args: list[object], cwd: object, line: int) -> list[Finding]:
    found = []
    index = 0
    while index < len(args):
        word = args[index]
        text = word.text if isinstance(word, _Str) else None
        if text in ("-r", "--requirement") and index + 1 < len(args):
            found.append(_requirement_file(args[index + 1], cwd, line))
            index += 2
            continue
        if text is not None and text.startswith(("-r=", "--requirement=")):
            found.append(_requirement_file(_Str(text.split("=", 1)[1]), cwd, line))
        elif text in _PIP_OPTIONS_WITH_VALUE and text not in ("-e", "--editable"):
            index += 2
            continue
        elif text is not None and (text.startswith("-") and text not in ("-e", "--editable")):
            pass  # -U, --no-deps, --upgrade, ...: no package
        elif text in ("-e", "--editable"):
            pass  # the next word is the package (a path or a URL)
        elif text == "":
            pass
        elif isinstance(word, _Lines):  # each line of a file handed to pip: that file is a requirement file
            found.append(_requirement_file(word.path, cwd, line))
        elif text is not None:
            local = _in_cwd(text, cwd) if text.startswith((".", "/")) else None
            found.append(Finding("package", local or text, line))
        elif isinstance(word, _NodePath):
            found.append(Finding("package", word.rel or ".", line))
        else:
            found.append(Finding("dynamic", f"pip is given `{_shown(word)}`", line))
        index += 1
    return found


def _requirement_file(value: object, cwd: object, line: int) -> Finding:
    if isinstance(value, _NodePath):
        return Finding("requirements", value.rel, line)
    if isinstance(value, _Str):
        where = _in_cwd(value.text, cwd)
        if where is not None:
            return Finding("requirements", where, line)
    return Finding("dynamic", f"a requirement file `{_shown(value)}`", line)


def _git_clone(args: list[object], cwd: object, line: int) -> list[Finding]:
    positional: list[object] = []
    index = 0
    while index < len(args):
        word = args[index]
        text = word.text if isinstance(word, _Str) else None
        if text in _GIT_CLONE_OPTIONS_WITH_VALUE:
            index += 2
            continue
        if not (text is not None and text.startswith("-")):
            positional.append(word)
        index += 1
    if not positional:
        return [Finding("dynamic", "git clone without a URL envbuild can read", line)]
    return list(_clones([positional[0]], [positional[1]] if len(positional) > 1 else [_Str("")], [cwd], line,
                        "git clone"))


def _clones(urls: list[object], targets: list[object], cwds: list[object], line: int, code: str) -> Iterator[Finding]:
    for url in urls:
        if not isinstance(url, _Str):
            yield Finding("dynamic", f"clones `{_shown(url)}` ({code})", line)
            continue
        for target in targets:
            for cwd in cwds:
                if isinstance(target, _NodePath):
                    where = target.rel
                elif isinstance(target, _Str):
                    name = target.text or url.text.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
                    where = _in_cwd(name, cwd) or name
                else:
                    where = "?"
                yield Finding("clone", url.text, line, where)


def _in_cwd(text: str, cwd: object) -> str | None:
    """A relative path as seen from `cwd` (install.py runs in the node's folder), relative to the node's
    folder; None when it is not inside it."""
    if text.startswith("/") or re.match(r"[A-Za-z]:[\\/]", text):
        return None
    base = cwd.rel if isinstance(cwd, _NodePath) else "" if (cwd is _NONE or cwd == _Str("")) else None
    if base is None:
        return None
    found = _node_path(posixpath.join(base, text.replace("\\", "/")))
    return found.rel if isinstance(found, _NodePath) else None


def _shown(value: object) -> str:
    if isinstance(value, _Unknown):
        return value.code
    if isinstance(value, _Str):
        return value.text
    if isinstance(value, _NodePath):
        return value.rel
    if isinstance(value, _Exe):
        return "sys.executable"
    if isinstance(value, _Lines):
        return f"a line of {_shown(value.path)}"
    if isinstance(value, _Param):
        return value.name
    return "a value computed at run time"


# -- what the lock does not hold ------------------------------------------------------------------------

def uncovered(report: ScriptReport, *, read_files: Collection[str], held: Collection[str],
              node: Path | None = None) -> list[Finding]:
    """The findings the lock does not hold: requirement files not read (`read_files`, relative to the node's
    folder), packages whose name is not among `held` (canonical names), clones whose requirements.txt is
    not read, dynamic findings, and scripts it runs. With `node` (the node's folder), a script it runs that
    is in the node's folder (a sub-pack cloned there) is read too, one level deep: its findings count
    instead, at the line that runs it."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    def is_held(finding: Finding) -> bool:
        try:
            requirement = Requirement(finding.value)
        except InvalidRequirement:
            return False
        return requirement.url is None and canonicalize_name(requirement.name) in held

    chosen = {f.choice for f in report.findings if f.kind == "package" and f.choice and is_held(f)}
    missing = []
    for finding in report.findings:
        if finding.kind == "requirements" and finding.value in read_files:
            continue
        if finding.kind == "clone" and f"{finding.target}/requirements.txt" in read_files:
            continue
        if finding.kind == "script" and node is not None and (node / finding.value).is_file():
            inner = read_install_script(node / finding.value, node)
            base = posixpath.dirname(finding.value)
            rebased = tuple(_rebased(f, base, finding) for f in inner.findings if f.kind != "script")
            missing.extend(uncovered(inner._replace(findings=rebased), read_files=read_files, held=held))
            continue
        if finding.kind == "package" and (is_held(finding) or finding.choice in chosen and finding.choice):
            continue  # held, or one of a choice another of which is held
        missing.append(finding)
    return missing


def _rebased(finding: Finding, base: str, runner: Finding) -> Finding:
    """A finding of a script run by install.py, said relative to the node's folder at the line that runs it."""
    if finding.kind == "requirements":
        where = _node_path(posixpath.join(base, finding.value))
        if isinstance(where, _NodePath):
            return finding._replace(value=where.rel, line=runner.line)
        return Finding("dynamic", f"{runner.value} names a requirement file outside the node's folder", runner.line)
    if finding.kind == "clone":
        where = _node_path(posixpath.join(base, finding.target))
        return finding._replace(target=where.rel if isinstance(where, _NodePath) else "?", line=runner.line)
    if finding.kind == "dynamic":
        return finding._replace(value=f"in {runner.value}: {finding.value}", line=runner.line)
    return finding._replace(line=runner.line)


def _said(text: str, limit: int = 200) -> str:
    """A value from the script, fit for a message and a committed file: credentials in a URL hidden,
    control characters escaped, long values cut."""
    from envbuild.core.runner import redact

    shown = re.sub(r"[\x00-\x1f\x7f-\x9f]", lambda c: f"\\x{ord(c.group()):02x}", redact(text))
    return shown if len(shown) <= limit else shown[:limit] + "..."


def describe(node: str, missing: Sequence[Finding], *, not_held: str = "the lock does not hold") -> str:
    """The findings that `not_held` (the lock, or the node's requirement files), said in a few
    clauses, with the `[custom-nodes.NAME] requirements` line that locks the files."""
    missing = [f._replace(value=_said(f.value), target=_said(f.target)) for f in missing]
    files = [f for f in missing if f.kind == "requirements"]
    packages = [f for f in missing if f.kind == "package"]
    clones = [f for f in missing if f.kind == "clone"]
    scripts = [f for f in missing if f.kind == "script"]
    dynamic = [f for f in missing if f.kind == "dynamic"]
    said = []
    installs = [f"the requirement file {f.value} (line {f.line})" for f in files]
    choices: dict[str, list[Finding]] = {}
    for f in packages:
        choices.setdefault(f.choice or f"{f.line}:{f.value}", []).append(f)
    installs += [" or ".join(f.value for f in group) + f" (line {group[0].line})" for group in choices.values()]
    if installs:
        said.append(f"it installs what {not_held}: {', '.join(installs)}")
    if clones:
        said.append("it clones " + ", ".join(f"{f.value} into {f.target} (line {f.line})" for f in clones)
                    + f", whose requirements {not_held}")
    if scripts:
        said.append("it runs " + ", ".join(f"{f.value} (line {f.line})" for f in scripts)
                    + ", which envbuild cannot read (not in the node's folder)")
    if dynamic:
        said.append("install.py does something envbuild cannot read statically: review it ("
                    + "; ".join(f"line {f.line}: {f.value}" for f in dynamic) + ")")
    advice = []
    wanted = [f.value for f in files] + [f"{f.target}/requirements.txt" for f in clones if f.target != "?"]
    if wanted:
        listed = ", ".join(f'"{w}"' for w in wanted)
        advice.append(f"to lock them, add [custom-nodes.{node}] requirements = [{listed}] to envbuild.toml"
                      + (" (after cloning the sub-repository there)" if clones else ""))
    if packages:
        advice.append("put the packages the node needs into a file of [lock] extra-requirements")
    text = "envbuild never runs install.py; " + "; ".join(said)
    return text + (". " + "; ".join(advice)[0].upper() + "; ".join(advice)[1:] if advice else "")
