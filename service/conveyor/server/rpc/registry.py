"""Wires the contract's services into a grpc.aio server.

`Services` is built before the server (the interceptor must be passed at
construction) and bound to the running AppContext in `register`, once the pool
exists. Services not built yet are served by the UNIMPLEMENTED handler, so every
contract method answers and is authorised.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from conveyor.server.context import AppContext
from conveyor.server.domain.auth import Principal
from conveyor.server.domain.keys import Authenticator, ensure_bootstrap_key
from conveyor.server.domain.projects import Projects
from conveyor.server.rpc import unimplemented
from conveyor.server.rpc.interceptor import ConveyorInterceptor
from conveyor.server.rpc.projects import ProjectServicer
from conveyor.server.rpc.rules import SERVICES, method_rules


class _LateAuthenticator(Authenticator):
    """Stands in for the Authenticator until register() binds the real one."""

    def __init__(self) -> None:
        self.bound: Authenticator | None = None

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        assert self.bound is not None, "register() binds the authenticator before serving"
        return await self.bound.authenticate(metadata)

    def forget(self, key_id: str) -> None:
        if self.bound is not None:
            self.bound.forget(key_id)


class Services:
    def __init__(self) -> None:
        self._authenticator = _LateAuthenticator()
        self.interceptor = ConveyorInterceptor(self._authenticator, method_rules())

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.interceptor]

    def register(self, server: grpc.aio.Server, ctx: AppContext) -> list[str]:
        """Adds every contract service; returns their full names for health and reflection."""
        self._authenticator.bound = Authenticator(ctx.pool)
        # Service full name -> servicers. Each method is served by the first servicer
        # whose class defines it; the rest answer UNIMPLEMENTED with an ErrorInfo.
        implemented: dict[str, list[object]] = {
            "conveyor.v1.ProjectService": [
                ProjectServicer(Projects(ctx.pool, self._authenticator)),
            ],
        }
        for service in SERVICES:
            server.add_generic_rpc_handlers(
                (unimplemented.generic_handler(service, implemented.get(service.full_name, [])),)
            )
        return [service.full_name for service in SERVICES]

    async def bootstrap(self, ctx: AppContext) -> None:
        await ensure_bootstrap_key(ctx.pool, ctx.settings.data_dir)
