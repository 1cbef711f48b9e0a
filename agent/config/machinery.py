"""The config machinery shared by the station and the cloud: typed fields, conversion, one-pass
validation and the line of every key.

A section is a dataclass whose fields are made with `opt(default, help=..., min=, max=, choices=,
pattern=, form=)`. A composition is a dataclass whose fields are sections; `build` fills one from
TOML data plus `<PREFIX><SECTION>_<KEY>` environment variables and reports every problem at once,
each with the file and line (or the variable), the key path and the reason.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1 << 40,
}


class ByteSize(int):
    """An int that may be written in the file as "4 MiB" or "512kB"."""


def opt(default: Any, *, help: str, **checks: Any) -> Any:
    """A config field with its default, a one-line help text and its checks.

    Checks: `min`, `max`, `choices`, `pattern` (a regex) with `form` (how the value must look, said
    to the user instead of the regex).
    """
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def section(cls: type[T]) -> T:
    """A composition field holding one section, built from its defaults when absent."""
    return field(default_factory=cls, metadata={"section": True})


def section_fields(composition: type) -> dict[str, type]:
    """Section name -> section dataclass, in declaration order."""
    hints = typing.get_type_hints(composition)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(composition)
        if f.metadata.get("section", dataclasses.is_dataclass(hints[f.name]))
    }


@runtime_checkable
class CheckedSection(Protocol):
    """A section with rules across its keys, checked in the same pass as the keys themselves."""

    def check(self) -> Iterator[tuple[str, str]]:
        """Yield (key path inside the section, reason) for each problem, e.g. ("endpoints[1].url", ...)."""
        ...


# --- problems ------------------------------------------------------------------------------------

_UNSET: Any = object()


@dataclass(frozen=True)
class Problem:
    key: str
    line: int | None
    reason: str
    var: str | None = None  # the environment variable the value came from, if any
    value: Any = _UNSET  # the value as written, when it was refused
    expected: str = ""  # the Python type wanted, when the value had the wrong type

    def where(self, source: str) -> str:
        if self.var:
            return f"environment {self.var}"
        return f"{source}:{self.line}" if self.line else source

    def render(self, source: str) -> str:
        return f"{self.where(source)}: {self.key}: {self.reason}"


class ConfigError(ValueError):
    """A configuration that must not be run; lists every problem found."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(self.render(p) for p in problems))

    def render(self, problem: Problem) -> str:
        return problem.render(self.source)


class ComponentConfigError(ValueError):
    """A component refused its validated settings at start (e.g. a token file went missing)."""


class SecretError(ComponentConfigError):
    """A token or password file cannot be read; the message names the key and the file."""


def read_secret(path: str | Path, key: str) -> str:
    """The stripped content of a token or password file, or SecretError naming `key`."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SecretError(f"{key}: cannot read {path}: {reason}") from None
    if not text:
        raise SecretError(f"{key}: {path} is empty")
    return text


class WrongType(ValueError):
    """A value of the wrong TOML type; the message says what was wanted and what came."""

    def __init__(self, message: str, expected: str) -> None:
        super().__init__(message)
        self.expected = expected


# --- where each key was written ------------------------------------------------------------------


class Positions:
    """The line of every key, table, `[[array]]` entry, inline table and array item in a TOML text,
    plus the environment variable behind each overridden key (tomllib keeps no positions).

    Paths look like `upload.endpoints[1].name`; an unknown path falls back to its nearest parent.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = _TomlScan(text).lines
        self.vars: dict[str, str] = {}

    def line(self, path: str) -> int | None:
        for p in _parents(path):
            if p in self.lines:
                return self.lines[p]
        return None

    def var(self, path: str) -> str | None:
        for p in _parents(path):
            if p in self.vars:
                return self.vars[p]
        return None

    def problem(self, path: str, reason: str, **extra: Any) -> Problem:
        var = self.var(path)
        return Problem(path, None if var else self.line(path), reason, var, **extra)


def _parents(path: str) -> Iterator[str]:
    while path:
        yield path
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""


class _TomlScan:
    """A position-only walk over TOML text that tomllib already accepted, so it may be lenient."""

    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.t = text
        self.i = 0
        self.line = 1
        self.lines: dict[str, int] = {}
        self.arrays: dict[str, int] = {}
        try:
            self._document()
        except (IndexError, ValueError):
            pass  # a text tomllib would refuse: keep the positions found so far

    def _peek(self, n: int = 1) -> str:
        return self.t[self.i : self.i + n]

    def _advance(self, n: int = 1) -> None:
        self.line += self.t.count("\n", self.i, self.i + n)
        self.i += n

    def _skip(self, newlines: bool) -> None:
        while self.i < len(self.t):
            c = self.t[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self._advance()
            elif c == "#":
                end = self.t.find("\n", self.i)
                self._advance((end if end >= 0 else len(self.t)) - self.i)
            else:
                return

    def _record(self, path: str, line: int) -> None:
        self.lines.setdefault(path, line)

    def _resolve(self, segments: list[str]) -> str:
        # a dotted name through an array of tables means its latest entry
        cur = ""
        for seg in segments:
            cur = f"{cur}.{seg}" if cur else seg
            if cur in self.arrays:
                cur = f"{cur}[{self.arrays[cur]}]"
        return cur

    def _key(self) -> list[str]:
        segments = []
        while True:
            self._skip(False)
            c = self._peek()
            if c in ('"', "'"):
                end = self.t.index(c, self.i + 1)
                segments.append(self.t[self.i + 1 : end])
                self._advance(end + 1 - self.i)
            else:
                m = self._BARE.match(self.t, self.i)
                if not m:
                    return segments
                segments.append(m.group(0))
                self._advance(m.end() - self.i)
            self._skip(False)
            if self._peek() != ".":
                return segments
            self._advance()

    def _document(self) -> None:
        table = ""
        while True:
            self._skip(True)
            if self.i >= len(self.t):
                return
            line = self.line
            if self._peek(2) == "[[":
                self._advance(2)
                segments = self._key()
                base = self._resolve(segments[:-1])
                base = f"{base}.{segments[-1]}" if base else segments[-1]
                self.arrays[base] = self.arrays.get(base, -1) + 1
                table = f"{base}[{self.arrays[base]}]"
                self._record(base, line)
                self._record(table, line)
            elif self._peek() == "[":
                self._advance()
                table = self._resolve(self._key())
                self._record(table, line)
            else:
                segments = self._key()
                if not segments:
                    self._advance()  # not a key: step over it rather than stall
                    continue
                path = ".".join(s for s in (table, ".".join(segments)) if s)
                for n in range(1, len(segments) + 1):  # `mqtt.port = 1` also places `mqtt`
                    self._record(".".join(s for s in (table, *segments[:n]) if s), line)
                self._skip(False)
                if self._peek() == "=":
                    self._advance()
                    self._skip(False)
                    self._value(path)
            end = self.t.find("\n", self.i)
            self._advance((end if end >= 0 else len(self.t)) - self.i)

    def _value(self, path: str) -> None:
        c = self._peek()
        if self._peek(3) in ('"""', "'''"):
            quote = self._peek(3)
            j = self.i + 3
            while True:
                j = self.t.index(quote, j)
                if quote == "'''" or self.t[j - 1] != "\\":
                    break
                j += 1
            while self.t[j + 3 : j + 4] == quote[0]:  # up to two quotes may end the content
                j += 1
            self._advance(j + 3 - self.i)
        elif c == '"':
            j = self.i + 1
            while self.t[j] != '"':
                j += 2 if self.t[j] == "\\" else 1
            self._advance(j + 1 - self.i)
        elif c == "'":
            self._advance(self.t.index("'", self.i + 1) + 1 - self.i)
        elif c == "[":
            self._advance()
            index = 0
            while True:
                self._skip(True)
                if self._peek() in ("]", ""):
                    self._advance()
                    return
                item = f"{path}[{index}]"
                self._record(item, self.line)
                self._value(item)
                index += 1
                self._skip(True)
                if self._peek() == ",":
                    self._advance()
        elif c == "{":
            self._advance()
            while True:
                self._skip(True)
                if self._peek() in ("}", ""):
                    self._advance()
                    return
                line = self.line
                segments = self._key()
                if not segments:
                    self._advance()
                    continue
                for n in range(1, len(segments) + 1):
                    self._record(".".join((path, *segments[:n])), line)
                self._skip(False)
                if self._peek() == "=":
                    self._advance()
                    self._skip(False)
                    self._value(".".join((path, *segments)))
                self._skip(True)
                if self._peek() == ",":
                    self._advance()
        else:
            m = re.compile(r"[^,\]}\n#]*").match(self.t, self.i)
            assert m is not None
            self._advance(max(m.end() - self.i, 1))


# --- building ------------------------------------------------------------------------------------


class _EnvValue(str):
    """A string from the environment, converted to the field's type when checked."""


def parse_toml(text: str, source: str, *, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """TOML text as data, or `error` naming the line of the syntax error."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise error(source, [Problem("(syntax)", line, f"not valid TOML: {exc}")]) from None


def build(
    composition: type[T],
    data: Mapping[str, Any],
    text: str,
    source: str,
    env: Mapping[str, str],
    env_prefix: str,
    *,
    error: type[ConfigError] = ConfigError,
    extra: Mapping[str, Any] | None = None,
) -> T:
    """A composition built from TOML data and environment overrides, or `error` with every problem.

    `extra` goes to the composition unchanged (e.g. its `source`).
    """
    sections = section_fields(composition)
    positions = Positions(text)
    problems: list[Problem] = []
    for name in data:
        if name not in sections:
            known = f"known: {', '.join(sections)}"
            problems.append(
                positions.problem(name, _unknown(f"section [{name}]", name, sections, known))
            )
    overrides = _env_overrides(env, env_prefix, sections, positions, problems)
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            problems.append(positions.problem(name, "must be a table [section]"))
            raw = {}
        raw = {**raw, **overrides.get(name, {})}
        before = len(problems)
        built[name] = _build_section(name, cls, raw, positions, problems)
        # rules across keys only make sense once every key passed on its own
        if len(problems) == before and isinstance(built[name], CheckedSection):
            for key, reason in built[name].check():
                joiner = "" if key.startswith("[") else "."
                problems.append(positions.problem(f"{name}{joiner}{key}", reason))
    if problems:
        problems.sort(key=lambda p: (p.var is not None, p.line or 0))
        raise error(source, problems)
    return composition(**built, **(extra or {}))


def _env_overrides(
    env: Mapping[str, str],
    prefix: str,
    sections: dict[str, type],
    positions: Positions,
    problems: list[Problem],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    by_length = sorted(sections, key=len, reverse=True)  # `upload_x` before `upload`
    for var, value in env.items():
        if not var.startswith(prefix):
            continue
        rest = var[len(prefix) :].lower()
        # a variable naming no section belongs to someone else (FIELDSTATION_CLOUD_… on a station)
        name = next((n for n in by_length if rest.startswith(n + "_")), None)
        if name is None:
            continue
        key = rest[len(name) + 1 :]
        fields = [f.name for f in dataclasses.fields(sections[name])]
        path = f"{name}.{key}"
        if key not in fields:
            takes = f"[{name}] takes: {', '.join(fields)}"
            problems.append(Problem(path, None, _unknown("key", key, fields, takes), var))
            continue
        positions.vars[path] = var
        out.setdefault(name, {})[key] = _EnvValue(value)
    return out


def _unknown(what: str, word: str, known: typing.Iterable[str], listing: str) -> str:
    """'unknown key; did you mean `port`? [mqtt] takes: …' (the guess only when one is close)."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if close:
        return f"unknown {what}; did you mean `{close[0]}`? {listing}"
    return f"unknown {what}; {listing}"


def _label(path: str) -> str:
    """How a table is written in the file: [mqtt] or [[upload.endpoints]]."""
    if path.endswith("]"):
        return f"[[{path[: path.rfind('[')]}]]"
    return f"[{path}]"


def _build_section(
    path: str, cls: type, raw: dict[str, Any], positions: Positions, problems: list[Problem]
) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{path}.{key}"
        if key not in fields:
            takes = f"{_label(path)} takes: {', '.join(fields)}"
            problems.append(positions.problem(full, _unknown("key", key, fields, takes)))
            continue
        try:
            values[key] = _check(hints[key], fields[key], value, full, positions, problems)
        except WrongType as exc:
            problems.append(positions.problem(full, str(exc), value=value, expected=exc.expected))
        except ValueError as exc:
            problems.append(positions.problem(full, str(exc), value=value))
    try:
        return cls(**values)
    except TypeError as exc:
        problems.append(positions.problem(path, str(exc)))
        return cls()


def _check(
    hint: Any,
    f: dataclasses.Field[Any],
    value: Any,
    full: str,
    positions: Positions,
    problems: list[Problem],
) -> Any:
    meta = f.metadata
    value = _convert(hint, value, full, positions, problems)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "min" in meta and value < meta["min"]:
            raise ValueError(f"{value} is below the minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise ValueError(f"{value} is above the maximum {meta['max']}")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, meta['choices']))}")
    if "pattern" in meta and isinstance(value, str) and not re.match(meta["pattern"], value):
        if "form" in meta:
            raise ValueError(f"{value!r} must look like {meta['form']}")
        raise ValueError(f"{value!r} is not of the form {meta['pattern']}")
    return value


def _convert(
    hint: Any, value: Any, full: str, positions: Positions, problems: list[Problem]
) -> Any:
    from_env = isinstance(value, _EnvValue)
    origin = typing.get_origin(hint)
    if hint is bool:
        if from_env:
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise WrongType(f"{value!r} is not a boolean (true/false)", "bool")
        if not isinstance(value, bool):
            raise WrongType(f"must be true or false, got {_tname(value)}", "bool")
        return value
    if hint is ByteSize:
        return ByteSize(_parse_size(value))
    if hint is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                raise WrongType(f"{value!r} is not an integer", "int") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise WrongType(f"must be an integer, got {_tname(value)}", "int")
        return value
    if hint is float:
        if from_env:
            try:
                return float(value)
            except ValueError:
                raise WrongType(f"{value!r} is not a number", "float") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WrongType(f"must be a number, got {_tname(value)}", "float")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise WrongType(f"must be a string, got {_tname(value)}", "str")
        return str(value)
    if origin is list:
        (item,) = typing.get_args(hint)
        if from_env:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise WrongType(f"must be a list, got {_tname(value)}", "list")
        if isinstance(item, type) and dataclasses.is_dataclass(item):
            out = []
            for i, entry in enumerate(value):
                if not isinstance(entry, dict):
                    problems.append(
                        positions.problem(f"{full}[{i}]", f"must be a table, got {_tname(entry)}")
                    )
                    continue
                out.append(_build_section(f"{full}[{i}]", item, entry, positions, problems))
            return out
        return [_convert(item, v, full, positions, problems) for v in value]
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        raise ValueError("union fields are not supported")  # keep sections simple
    if isinstance(hint, type) and issubclass(hint, str):
        if not isinstance(value, str):
            raise WrongType(f"must be a string, got {_tname(value)}", "str")
        return hint(value)
    raise ValueError(f"unsupported field type {hint!r}")


def _parse_size(value: Any) -> int:
    if isinstance(value, bool):
        raise WrongType('must be a size in bytes, e.g. 4194304 or "4 MiB", got a boolean', "int")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            unit = m.group(2).lower()
            if unit in _SIZE_UNITS:
                return int(float(m.group(1)) * _SIZE_UNITS[unit])
        raise ValueError(f'{value!r} is not a size such as 4194304, "512 KiB" or "8 GiB"')
    raise WrongType(f"must be a size in bytes, got {_tname(value)}", "int")


def _tname(value: object) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --- reading back --------------------------------------------------------------------------------


def section_dict(sec: object) -> dict[str, Any]:
    """A section (or entry) as plain data, nested entries included."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(sec):  # type: ignore[arg-type]
        value = getattr(sec, f.name)
        if dataclasses.is_dataclass(value):
            value = section_dict(value)
        elif isinstance(value, list):
            value = [section_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
        out[f.name] = value
    return out


def example_toml(sections: dict[str, type], title: str) -> str:
    """Every key of every section with its default and help, as commented TOML."""
    out = [f"# {title}"]
    for name, cls in sections.items():
        out.append(f"\n[{name}]")
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            out.append(f"# {f.metadata.get('help', '')}")
            out.append(f"{f.name} = {_toml_value(default)}")
    return "\n".join(out) + "\n"


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        if value and dataclasses.is_dataclass(value[0]):
            return "[]"
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
