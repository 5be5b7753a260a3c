"""Contract methods whose behaviour is not built yet answer UNIMPLEMENTED, never a fake success.

Built from the service descriptors, so every method of the contract is served
(and authorised) from the first release, and a client learns exactly which
method is missing from the ErrorInfo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from conveyor.server.errors import Unimplemented


def _error(method: MethodDescriptor) -> Unimplemented:
    name = f"{method.containing_service.name}.{method.name}"
    return Unimplemented(
        f"{name} is part of the v1 contract but not implemented by this server yet",
        metadata={"method": method.full_name},
    )


def _handler(method: MethodDescriptor) -> grpc.RpcMethodHandler[Any, Any]:
    request_cls = GetMessageClass(method.input_type)
    response_cls = GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_deserializer": request_cls.FromString,
        "response_serializer": response_cls.SerializeToString,
    }
    if method.server_streaming:

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            raise _error(method)
            yield  # pragma: no cover - makes this an async generator

        if method.client_streaming:
            return grpc.stream_stream_rpc_method_handler(stream, **kwargs)
        return grpc.unary_stream_rpc_method_handler(stream, **kwargs)

    async def unary(request: Any, context: Any) -> Any:
        raise _error(method)

    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


def _servicer_handler(method: MethodDescriptor, behavior: Any) -> grpc.RpcMethodHandler[Any, Any]:
    request_cls = GetMessageClass(method.input_type)
    response_cls = GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_deserializer": request_cls.FromString,
        "response_serializer": response_cls.SerializeToString,
    }
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(behavior, **kwargs)
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
    return grpc.unary_unary_rpc_method_handler(behavior, **kwargs)


def _defines(servicer: object, name: str) -> bool:
    # The generated base class defines every method (answering a bare UNIMPLEMENTED
    # with no ErrorInfo), so only the servicer's own classes count.
    return any(
        name in vars(cls)
        for cls in type(servicer).__mro__
        if cls is not object and not cls.__module__.endswith("_pb2_grpc")
    )


def generic_handler(
    service: ServiceDescriptor, servicers: Sequence[object] = ()
) -> grpc.GenericRpcHandler:
    """Serves each method from the first servicer that defines it, else UNIMPLEMENTED.

    Several servicers may share a service (e.g. task CRUD and task export live in
    different modules); each contributes the methods its class defines.
    """
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        owner = next((s for s in servicers if _defines(s, method.name)), None)
        if owner is not None:
            handlers[method.name] = _servicer_handler(method, getattr(owner, method.name))
        else:
            handlers[method.name] = _handler(method)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
