"""Type aliases for grpc.aio's classes, which the stubs make generic but the runtime does not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:
    # The context every servicer method receives.
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    # What an interceptor receives and returns.
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
