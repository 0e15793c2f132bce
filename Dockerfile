# syntax=docker/dockerfile:1
# Prism: gateway and notification service in one image. `docker run IMAGE` runs a gateway node;
# `docker run IMAGE notify` the notification service (see helm/prism for Kubernetes).

FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY shared ./shared
COPY notification_service ./notification_service
COPY loadtest ./loadtest
RUN /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 prism \
 && useradd --system --uid 10001 --gid prism --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin prism
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080 8090
ENTRYPOINT ["prism"]
CMD ["gateway"]
