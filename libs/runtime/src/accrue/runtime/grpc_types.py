"""Type aliases for grpc.aio's generic classes, so servicers stay readable."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

# The context every servicer method receives.
Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# What an interceptor receives and returns.
Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
