"""The operator's dashboard: server-rendered pages on the HTTP port at `/`.

Every page and action calls the gRPC services through a channel, with the signed-in
session as its bearer, so the dashboard gets exactly the authentication, authorisation,
validation and audit that any other caller gets; it holds no rule of its own.
"""

from conveyor.server.dashboard.app import Dashboard

__all__ = ["Dashboard"]
