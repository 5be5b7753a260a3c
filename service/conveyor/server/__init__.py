"""The Conveyor server: gRPC services, REST gateway, background loops and storage."""
