# The production image: the pinned runtime dependencies, the service's modules and its
# migrations, run as an unprivileged user. It mirrors README.md, "Running in production".
FROM python:3.11-slim

# Unbuffered output: a line logged just before the process dies still reaches `docker logs`.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    ENVIRONMENT=production

WORKDIR /app

# Dependencies first, in their own layer: a change of code does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app

# Only what runs: the root modules (main.py and what it imports, server.py's protocol),
# the routers and the migrations. Owned by root, so the service cannot rewrite its own code.
COPY *.py alembic.ini ./
COPY routes/ routes/
COPY migrations/ migrations/
COPY docker-entrypoint.sh /usr/local/bin/

# A numeric user, so that a platform checking "not root" (Kubernetes' runAsNonRoot) can tell.
USER 10001:10001

EXPOSE 8000

# Liveness only: a database outage shows in /health/ready, and must not get the container
# restarted. No curl in the slim image; a proxy set in the environment is not used.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8000/health', timeout=4)"]

# Migrations, then uvicorn in the shell's place (see docker-entrypoint.sh). The workers
# (WEB_CONCURRENCY) and the trusted proxies (FORWARDED_ALLOW_IPS) come from the environment,
# since they depend on the deployment; everything else is the README's production command.
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["uvicorn", "main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "server:BoundedHttpToolsProtocol", "--timeout-keep-alive", "65", \
     "--timeout-graceful-shutdown", "20"]
