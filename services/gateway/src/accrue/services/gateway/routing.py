"""google.api.http path templates, compiled once into matchers, and the router over them.

Grammar (google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;

Matching runs on the raw (still percent-encoded) path so an encoded "/" inside an id cannot split
a segment. Resource ids never contain ':' or '/', so a segment wildcard matches `[^/:]+` and a
custom verb such as `:approve` can never be swallowed by the id before it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

_SEGMENT = r"[^/:]+"
_SEGMENTS = rf"{_SEGMENT}(?:/{_SEGMENT})*"
_LITERAL = re.compile(r"^[A-Za-z0-9._~\-]+$")
_FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*$")


class TemplateError(ValueError):
    """A path template in an http rule does not follow the grammar."""


@dataclass(frozen=True)
class Variable:
    """A `{field.path=pattern}` capture; multi-segment ones keep an encoded '/' encoded."""

    field_path: str
    multi_segment: bool


@dataclass(frozen=True)
class PathTemplate:
    """A compiled template: the source text, its regex and how specific it is."""

    source: str
    openapi_path: str
    pattern: re.Pattern[str]
    variables: tuple[Variable, ...]
    literal_prefix: str
    literal_segments: int
    has_double_wildcard: bool
    is_static: bool

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The variables' decoded values by field path, or None when the path does not match."""
        if not raw_path.startswith(self.literal_prefix):
            return None
        m = self.pattern.match(raw_path)
        if m is None:
            return None
        values: dict[str, str] = {}
        for i, var in enumerate(self.variables):
            raw = m.group(f"v{i}")
            # Multi-segment captures keep %2F encoded so the value's own structure survives.
            values[var.field_path] = (
                unquote(re.sub("%2[Ff]", "%252F", raw)) if var.multi_segment else unquote(raw)
            )
        return values


def parse_template(source: str) -> PathTemplate:
    """Compile one google.api.http path template."""
    if not source.startswith("/"):
        raise TemplateError(f"{source!r}: a template starts with '/'")
    body, verb = _split_verb(source[1:], source)
    variables: list[Variable] = []
    regex_parts: list[str] = []
    openapi_parts: list[str] = []
    literal_segments = 0
    double = False
    segments = _split_top(body, source)
    for index, segment in enumerate(segments):
        if segment.startswith("{"):
            if not segment.endswith("}"):
                raise TemplateError(f"{source!r}: unclosed variable {segment!r}")
            inner = segment[1:-1]
            name, _, pattern = inner.partition("=")
            if not _FIELD_PATH.match(name):
                raise TemplateError(f"{source!r}: bad field path {name!r}")
            sub_regex, multi = _compile_segments(pattern or "*", source, last=index == len(segments) - 1)
            double = double or multi
            regex_parts.append(f"(?P<v{len(variables)}>{sub_regex})")
            variables.append(Variable(name, multi))
            openapi_parts.append("{" + name + "}")
        else:
            sub_regex, multi = _compile_segments(segment, source, last=index == len(segments) - 1)
            double = double or multi
            if segment not in ("*", "**"):
                literal_segments += 1
            regex_parts.append(sub_regex)
            openapi_parts.append(segment)
    verb_regex = f":{re.escape(verb)}" if verb else ""
    regex = "^/" + "/".join(regex_parts) + verb_regex + "$"
    prefix = "/"
    for segment in segments:
        if segment.startswith("{") or segment in ("*", "**"):
            break
        prefix += segment + "/"
    else:
        prefix = source  # no wildcard at all: the whole path is literal
    if len(variables) != len({v.field_path for v in variables}):
        raise TemplateError(f"{source!r}: a field is bound twice")
    return PathTemplate(
        source=source,
        openapi_path="/" + "/".join(openapi_parts) + (f":{verb}" if verb else ""),
        pattern=re.compile(regex),
        variables=tuple(variables),
        literal_prefix=prefix,
        literal_segments=literal_segments,
        has_double_wildcard=double,
        is_static=prefix == source,
    )


def _split_verb(body: str, source: str) -> tuple[str, str]:
    depth = 0
    last_slash = -1
    colon = -1
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0 and ch == "/":
            last_slash = i
            colon = -1
        elif depth == 0 and ch == ":" and colon < 0:
            colon = i
    if depth != 0:
        raise TemplateError(f"{source!r}: unbalanced braces")
    if colon < 0 or colon < last_slash:
        return body, ""
    verb = body[colon + 1 :]
    if not _LITERAL.match(verb):
        raise TemplateError(f"{source!r}: bad verb {verb!r}")
    return body[:colon], verb


def _split_top(body: str, source: str) -> list[str]:
    segments: list[str] = []
    depth = 0
    current = ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "/" and depth == 0:
            segments.append(current)
            current = ""
        else:
            current += ch
    segments.append(current)
    if any(not s for s in segments):
        raise TemplateError(f"{source!r}: empty segment")
    return segments


def _compile_segments(pattern: str, source: str, *, last: bool) -> tuple[str, bool]:
    parts: list[str] = []
    multi = False
    pieces = pattern.split("/")
    for i, piece in enumerate(pieces):
        if piece == "*":
            parts.append(_SEGMENT)
        elif piece == "**":
            if not (last and i == len(pieces) - 1):
                raise TemplateError(f"{source!r}: '**' must be the last segment")
            parts.append(_SEGMENTS)
            multi = True
        elif _LITERAL.match(piece):
            parts.append(re.escape(piece))
        else:
            raise TemplateError(f"{source!r}: bad segment {piece!r}")
    return "/".join(parts), multi


T = TypeVar("T")


@dataclass(frozen=True)
class RouteMatch(Generic[T]):
    """The target for a method and path, with the path variables' values."""

    target: T
    template: PathTemplate
    path_params: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    """The path is known but not for this method; `allowed` feeds the Allow header."""

    allowed: tuple[str, ...]


@dataclass
class _Group(Generic[T]):
    template: PathTemplate
    by_method: dict[str, T] = field(default_factory=dict)


class Router(Generic[T]):
    """Static paths by dict lookup, templated ones tried most specific first."""

    def __init__(self, routes: Iterable[tuple[str, PathTemplate, T]]) -> None:
        groups: dict[str, _Group[T]] = {}
        for method, template, target in routes:
            # Templates differing only in variable names match the same paths: one group.
            group = groups.setdefault(template.pattern.pattern, _Group(template))
            if method in group.by_method:
                raise TemplateError(f"{method} {template.source} is bound twice")
            group.by_method[method] = target
        self._static: dict[str, _Group[T]] = {
            g.template.source: g for g in groups.values() if g.template.is_static
        }
        dynamic = [g for g in groups.values() if not g.template.is_static]
        dynamic.sort(key=lambda g: (g.template.has_double_wildcard, -g.template.literal_segments))
        self._dynamic = dynamic

    def match(self, method: str, raw_path: str) -> RouteMatch[T] | MethodNotAllowed | None:
        """Resolve a request; MethodNotAllowed when only other methods serve the path."""
        allowed: set[str] = set()
        static = self._static.get(raw_path)
        if static is not None:
            target = static.by_method.get(method)
            if target is not None:
                return RouteMatch(target, static.template, {})
            allowed.update(static.by_method)
        for group in self._dynamic:
            values = group.template.match(raw_path)
            if values is None:
                continue
            target = group.by_method.get(method)
            if target is not None:
                return RouteMatch(target, group.template, values)
            allowed.update(group.by_method)
        return MethodNotAllowed(tuple(sorted(allowed))) if allowed else None
