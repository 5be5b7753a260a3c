"""The HTTP side of the server: health, metrics and (later) the REST gateway."""
