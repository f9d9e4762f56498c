"""Path templates (google/api/http.proto grammar) and the router over them."""

from __future__ import annotations

import pytest

from accrue.services.gateway.routing import (
    MethodNotAllowed,
    RouteMatch,
    Router,
    TemplateError,
    parse_template,
)


def test_literal_template_is_static_and_matches_only_itself() -> None:
    template = parse_template("/v1/rates:resolve")

    assert template.is_static
    assert template.match("/v1/rates:resolve") == {}
    assert template.match("/v1/rates") is None
    assert template.match("/v1/rates:resolveX") is None


def test_variable_matches_one_segment_and_is_percent_decoded() -> None:
    template = parse_template("/v1/projects/{id}")

    assert template.match("/v1/projects/p-1") == {"id": "p-1"}
    assert template.match("/v1/projects/a%20b") == {"id": "a b"}
    assert template.match("/v1/projects/a/b") is None
    assert template.match("/v1/projects/") is None


def test_custom_verb_after_a_variable_is_not_swallowed_by_it() -> None:
    template = parse_template("/v1/time-entries/{id}:approve")

    assert template.openapi_path == "/v1/time-entries/{id}:approve"
    assert template.match("/v1/time-entries/te-1:approve") == {"id": "te-1"}
    assert template.match("/v1/time-entries/te-1:decline") is None
    assert template.match("/v1/time-entries/te-1") is None


def test_variable_with_a_pattern_captures_the_whole_pattern() -> None:
    template = parse_template("/v1/{name=shelves/*/books/*}")

    assert template.openapi_path == "/v1/{name}"
    assert template.match("/v1/shelves/s1/books/b2") == {"name": "shelves/s1/books/b2"}
    assert template.match("/v1/shelves/s1/books") is None
    assert template.match("/v1/shelves/s1/notes/b2") is None


def test_double_wildcard_spans_segments_and_keeps_encoded_slashes() -> None:
    template = parse_template("/v1/files/{path=**}")

    assert template.match("/v1/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert template.match("/v1/files/a%2Fb/c%20d") == {"path": "a%2Fb/c d"}


def test_anonymous_wildcards_match_without_binding() -> None:
    template = parse_template("/v1/shelves/*/books/**:count")

    assert template.variables == ()
    assert template.match("/v1/shelves/s/books/x/y:count") == {}
    assert template.match("/v1/shelves/s/books/x/y") is None


def test_nested_field_path_variable() -> None:
    template = parse_template("/v1/{book.name=shelves/*}/pages/{page}")

    assert [v.field_path for v in template.variables] == ["book.name", "page"]
    assert template.match("/v1/shelves/s1/pages/7") == {"book.name": "shelves/s1", "page": "7"}


@pytest.mark.parametrize(
    "bad",
    ["v1/x", "/v1/{id", "/v1/{1d}", "/v1//x", "/v1/**/x", "/v1/{a}/{a}", "/v1/x:", "/v1/x y"],
)
def test_malformed_templates_are_rejected(bad: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(bad)


def _router() -> Router[str]:
    return Router(
        [
            ("GET", parse_template("/v1/time-entries"), "list"),
            ("POST", parse_template("/v1/time-entries"), "submit"),
            ("POST", parse_template("/v1/time-entries:batchSubmit"), "batch"),
            ("GET", parse_template("/v1/time-entries/{id}"), "get"),
            ("POST", parse_template("/v1/time-entries/{id}:approve"), "approve"),
            ("GET", parse_template("/v1/{name=files/**}"), "file"),
            ("GET", parse_template("/v1/files/special"), "special"),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "target", "params"),
    [
        ("GET", "/v1/time-entries", "list", {}),
        ("POST", "/v1/time-entries", "submit", {}),
        ("POST", "/v1/time-entries:batchSubmit", "batch", {}),
        ("GET", "/v1/time-entries/te-1", "get", {"id": "te-1"}),
        ("POST", "/v1/time-entries/te-1:approve", "approve", {"id": "te-1"}),
        ("GET", "/v1/files/special", "special", {}),
        ("GET", "/v1/files/a/b", "file", {"name": "files/a/b"}),
    ],
)
def test_router_picks_the_binding_for_method_and_path(
    method: str, path: str, target: str, params: dict[str, str]
) -> None:
    found = _router().match(method, path)

    assert isinstance(found, RouteMatch)
    assert found.target == target
    assert found.path_params == params


def test_router_reports_allowed_methods_for_a_known_path() -> None:
    assert _router().match("DELETE", "/v1/time-entries") == MethodNotAllowed(("GET", "POST"))
    assert _router().match("GET", "/v1/time-entries/te-1:approve") == MethodNotAllowed(("POST",))


def test_router_returns_none_for_unknown_paths() -> None:
    assert _router().match("GET", "/v1/nothing") is None
    assert _router().match("GET", "/v1/time-entries/te-1/extra") is None


def test_router_refuses_the_same_method_and_path_twice() -> None:
    with pytest.raises(TemplateError):
        Router([("GET", parse_template("/v1/x/{a}"), 1), ("GET", parse_template("/v1/x/{b}"), 2)])
