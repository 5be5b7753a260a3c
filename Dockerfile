# Production image: `conveyor serve` against DATABASE_URL (no embedded PostgreSQL).
#   docker build -t conveyor .
#   docker run -e DATABASE_URL=postgresql://... -p 50051:50051 -p 8080:8080 conveyor

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir build
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY generated ./generated
COPY service ./service
COPY client ./client
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVEYOR_DATA_DIR=/var/lib/conveyor \
    CONVEYOR_GRPC_ADDRESS=0.0.0.0:50051 \
    CONVEYOR_HTTP_ADDRESS=0.0.0.0:8080
COPY --from=build /dist/*.whl /tmp/
RUN WHEEL="$(ls /tmp/conveyor-*.whl)" \
    && pip install --no-cache-dir "${WHEEL}[server]" \
    && rm -f /tmp/*.whl \
    && useradd --system --uid 10001 --home-dir /var/lib/conveyor --create-home conveyor
USER conveyor
EXPOSE 50051 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["conveyor", "--target", "127.0.0.1:50051", "health"]
ENTRYPOINT ["conveyor"]
CMD ["serve"]
