"""Thin gRPC servicers and the interceptor that authenticates, authorises and maps errors."""
