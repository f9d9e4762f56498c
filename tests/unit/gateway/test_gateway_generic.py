"""The gateway against a contract it was not written for: templates, bindings and query types.

`test.library.v1.LibraryService` is built here in code. It has additional_bindings,
`{var=pattern/*}` and `**` templates, a PATCH with a body field, and requests with repeated, bool,
int64, enum, Timestamp, double and nested fields: the parts of google.api.http the real
contracts do not (yet) use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2, json_format

from accrue.contracts import descriptor_set
from accrue.services.gateway.bootstrap import build_app
from accrue.services.gateway.catalog import Catalog, load_catalog
from accrue.services.gateway.settings import GatewaySettings

SERVICE = "test.library.v1.LibraryService"
F = descriptor_pb2.FieldDescriptorProto


def _field(
    name: str, number: int, kind: int, *, type_name: str = "", repeated: bool = False, behavior: int = 0
) -> F:
    fd = F(name=name, number=number, type=kind, label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
    if type_name:
        fd.type_name = type_name
    if behavior:
        fd.options.Extensions[field_behavior_pb2.field_behavior].append(behavior)
    return fd


def _rpc(
    name: str, request: str, response: str, rule: http_pb2.HttpRule
) -> descriptor_pb2.MethodDescriptorProto:
    method = descriptor_pb2.MethodDescriptorProto(
        name=name, input_type=f".test.library.v1.{request}", output_type=f".test.library.v1.{response}"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return method


def library_files() -> descriptor_pb2.FileDescriptorSet:
    """The accrue set plus the synthetic library file."""
    file = descriptor_pb2.FileDescriptorProto(
        name="test/library/v1/library.proto",
        package="test.library.v1",
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/api/field_behavior.proto",
            "google/protobuf/timestamp.proto",
        ],
    )
    genre = file.enum_type.add(name="Genre")
    for number, value in enumerate(["GENRE_UNSPECIFIED", "GENRE_FICTION", "GENRE_POETRY"]):
        genre.value.add(name=value, number=number)
    book = file.message_type.add(name="Book")
    book.field.extend(
        [
            _field("name", 1, F.TYPE_STRING, behavior=field_behavior_pb2.OUTPUT_ONLY),
            _field("title", 2, F.TYPE_STRING, behavior=field_behavior_pb2.REQUIRED),
            _field("page_count", 3, F.TYPE_INT64),
            _field("in_print", 4, F.TYPE_BOOL),
            _field("tags", 5, F.TYPE_STRING, repeated=True),
            _field("genre", 6, F.TYPE_ENUM, type_name=".test.library.v1.Genre"),
            _field("publish_time", 7, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
            _field("rating", 8, F.TYPE_DOUBLE),
        ]
    )
    filt = file.message_type.add(name="Filter")
    filt.field.extend([_field("author", 1, F.TYPE_STRING), _field("min_pages", 2, F.TYPE_INT32)])
    list_req = file.message_type.add(name="ListBooksRequest")
    list_req.field.extend(
        [
            _field("parent", 1, F.TYPE_STRING),
            _field("tags", 2, F.TYPE_STRING, repeated=True),
            _field("in_print", 3, F.TYPE_BOOL),
            _field("filter", 4, F.TYPE_MESSAGE, type_name=".test.library.v1.Filter"),
            _field("max_pages", 5, F.TYPE_INT64),
            _field("genres", 6, F.TYPE_ENUM, type_name=".test.library.v1.Genre", repeated=True),
            _field("published_after", 7, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp"),
            _field("min_rating", 8, F.TYPE_DOUBLE),
        ]
    )
    file.message_type.add(name="ListBooksResponse").field.append(
        _field("books", 1, F.TYPE_MESSAGE, type_name=".test.library.v1.Book", repeated=True)
    )
    file.message_type.add(name="GetBookRequest").field.append(_field("name", 1, F.TYPE_STRING))
    update = file.message_type.add(name="UpdateBookRequest")
    update.field.extend(
        [
            _field("book", 1, F.TYPE_MESSAGE, type_name=".test.library.v1.Book"),
            _field("name", 2, F.TYPE_STRING),
            _field("validate_only", 3, F.TYPE_BOOL),
        ]
    )
    file.message_type.add(name="GetFileRequest").field.append(_field("path", 1, F.TYPE_STRING))
    file.message_type.add(name="File").field.append(_field("path", 1, F.TYPE_STRING))

    service = file.service.add(name="LibraryService")
    get_rule = http_pb2.HttpRule(get="/v1/{name=shelves/*/books/*}")
    get_rule.additional_bindings.add(get="/v1/books/{name}")
    service.method.extend(
        [
            _rpc(
                "ListBooks",
                "ListBooksRequest",
                "ListBooksResponse",
                http_pb2.HttpRule(get="/v1/{parent=shelves/*}/books"),
            ),
            _rpc("GetBook", "GetBookRequest", "Book", get_rule),
            _rpc(
                "UpdateBook",
                "UpdateBookRequest",
                "Book",
                http_pb2.HttpRule(patch="/v1/{name=shelves/*/books/*}", body="book"),
            ),
            _rpc("GetFile", "GetFileRequest", "File", http_pb2.HttpRule(get="/v1/files/{path=**}")),
        ]
    )
    files = descriptor_pb2.FileDescriptorSet()
    files.CopyFrom(descriptor_set())
    files.file.append(file)
    return files


class FakeLibrary:
    """A generic gRPC handler for the synthetic service; answers with a JSON echo of the request."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def handler(self) -> grpc.GenericRpcHandler:
        methods = {}
        for rpc in self.catalog.methods:
            request_cls = self.catalog.message_class(rpc.method.input_type)
            response_cls = self.catalog.message_class(rpc.method.output_type)
            methods[rpc.method.name] = grpc.unary_unary_rpc_method_handler(
                self._behave(rpc.method.name, response_cls),
                request_deserializer=request_cls.FromString,
                response_serializer=lambda m: m.SerializeToString(),
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _behave(self, name: str, response_cls: Any) -> Callable[[Any, Any], Awaitable[Any]]:
        async def behave(request: Any, context: Any) -> Any:
            self.seen.append((name, json_format.MessageToDict(request, preserving_proto_field_name=True)))
            response = response_cls()
            if name == "UpdateBook":
                response.CopyFrom(request.book)
                response.name = request.name
            elif name == "GetBook":
                response.name = request.name
            elif name == "GetFile":
                response.path = request.path
            elif name == "ListBooks":
                response.books.add(name=f"{request.parent}/books/b1", page_count=2**40, title="T")
            return response

        return behave


def library_catalog() -> Catalog:
    return load_catalog(library_files(), [SERVICE])


@pytest.fixture(scope="module")
async def library() -> AsyncIterator[tuple[FakeLibrary, str]]:
    fake = FakeLibrary(library_catalog())
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((fake.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield fake, f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def client(library: tuple[FakeLibrary, str], issuer: Any) -> AsyncIterator[httpx.AsyncClient]:
    fake, address = library
    fake.seen.clear()
    app = build_app(
        GatewaySettings(backends={SERVICE: address}, **issuer.settings),
        files=library_files(),
        services=[SERVICE],
        http=issuer.http,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", auth=issuer.auth()
    ) as client:
        yield client


def seen(library: tuple[FakeLibrary, str]) -> tuple[str, dict[str, Any]]:
    return library[0].seen[-1]


async def test_pattern_variable_captures_several_segments(
    client: httpx.AsyncClient, library: tuple[FakeLibrary, str]
) -> None:
    reply = await client.get("/v1/shelves/s1/books/b2")

    assert reply.status_code == 200, reply.text
    assert seen(library) == ("GetBook", {"name": "shelves/s1/books/b2"})
    assert reply.json()["name"] == "shelves/s1/books/b2"


async def test_additional_binding_reaches_the_same_rpc(
    client: httpx.AsyncClient, library: tuple[FakeLibrary, str]
) -> None:
    reply = await client.get("/v1/books/b9")

    assert reply.status_code == 200, reply.text
    assert seen(library) == ("GetBook", {"name": "b9"})


async def test_double_wildcard_variable(client: httpx.AsyncClient, library: tuple[FakeLibrary, str]) -> None:
    reply = await client.get("/v1/files/docs/2025/report.txt")

    assert reply.status_code == 200, reply.text
    assert seen(library) == ("GetFile", {"path": "docs/2025/report.txt"})


async def test_query_parameters_of_every_kind(
    client: httpx.AsyncClient, library: tuple[FakeLibrary, str]
) -> None:
    reply = await client.get(
        "/v1/shelves/s1/books",
        params=[
            ("tags", "a"),
            ("tags", "b"),
            ("inPrint", "true"),
            ("filter.author", "Le Guin"),
            ("filter.min_pages", "100"),
            ("max_pages", "9007199254740993"),
            ("genres", "GENRE_POETRY"),
            ("genres", "1"),
            ("publishedAfter", "2025-01-01T00:00:00Z"),
            ("minRating", "4.5"),
        ],
    )

    assert reply.status_code == 200, reply.text
    name, request = seen(library)
    assert name == "ListBooks"
    assert request == {
        "parent": "shelves/s1",
        "tags": ["a", "b"],
        "in_print": True,
        "filter": {"author": "Le Guin", "min_pages": 100},
        "max_pages": "9007199254740993",
        "genres": ["GENRE_POETRY", "GENRE_FICTION"],
        "published_after": "2025-01-01T00:00:00Z",
        "min_rating": 4.5,
    }
    # int64 goes out as a string, as proto3 JSON requires.
    assert reply.json()["books"][0]["pageCount"] == str(2**40)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("inPrint=maybe", "inPrint"),
        ("publishedAfter=yesterday", "publishedAfter"),
        ("filter=x", "filter"),
        ("filter.unknown=1", "filter.unknown"),
        ("minRating=high", "minRating"),
        ("parent=shelves/s2", "parent"),
    ],
)
async def test_bad_query_parameters_are_named(client: httpx.AsyncClient, query: str, param: str) -> None:
    reply = await client.get(f"/v1/shelves/s1/books?{query}")

    assert reply.status_code == 400, reply.text
    assert reply.json()["violations"][0]["field"] == param


async def test_patch_with_body_field_and_other_fields_from_the_query(
    client: httpx.AsyncClient, library: tuple[FakeLibrary, str]
) -> None:
    reply = await client.patch(
        "/v1/shelves/s1/books/b2?validateOnly=true",
        json={
            "title": "The Dispossessed",
            "pageCount": "387",
            "genre": "GENRE_FICTION",
            "publishTime": "1974-05-01T00:00:00Z",
        },
    )

    assert reply.status_code == 200, reply.text
    assert seen(library) == (
        "UpdateBook",
        {
            "name": "shelves/s1/books/b2",
            "validate_only": True,
            "book": {
                "title": "The Dispossessed",
                "page_count": "387",
                "genre": "GENRE_FICTION",
                "publish_time": "1974-05-01T00:00:00Z",
            },
        },
    )
    body = reply.json()
    assert body["name"] == "shelves/s1/books/b2"
    assert body["publishTime"] == "1974-05-01T00:00:00Z"
    assert body["tags"] == []
    assert body["inPrint"] is False


async def test_wrong_type_inside_a_body_field_is_named_relative_to_the_body(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.patch("/v1/shelves/s1/books/b2", json={"tags": ["ok", 3]})

    assert reply.status_code == 400, reply.text
    assert reply.json()["violations"][0]["field"] == "tags[1]"
