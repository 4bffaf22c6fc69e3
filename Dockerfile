# syntax=docker/dockerfile:1
# Multi-stage: dependencies in their own layer, a non-editable venv copied into a slim runtime.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, at the versions CI tested (constraints.txt): this layer is rebuilt only
# when pyproject.toml or constraints.txt changes.
COPY pyproject.toml README.md constraints.txt ./
# Bytecode is compiled here: the runtime's root filesystem is read-only, and compiling at
# every start doubled the import time of each process. The stub package's build output is
# removed, or setuptools would reuse its empty __init__.py in the next step.
RUN mkdir gateway && touch gateway/__init__.py \
    && /opt/venv/bin/pip install -c constraints.txt . \
    && /opt/venv/bin/pip uninstall --yes gmi-gateway \
    && rm -rf build gateway gmi_gateway.egg-info
COPY gateway ./gateway
RUN /opt/venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["gmi-gateway", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
