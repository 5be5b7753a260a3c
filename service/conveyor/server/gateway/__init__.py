"""The HTTP side of the server: health, metrics, the REST gateway and its OpenAPI."""
