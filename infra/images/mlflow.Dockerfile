# syntax=docker/dockerfile:1
# MLflow tracking server + model registry for the production stack (infra/docker-compose.yml,
# service mlflow): mlflow at the client's version, psycopg2 for the PostgreSQL backend store,
# boto3 for the s3:// artifact destination (MinIO or any S3-compatible store). Nothing is read
# from the build context.
#
#   docker build -f infra/images/mlflow.Dockerfile --build-arg MLFLOW_VERSION=3.17.2 \
#       -t rlsd/mlflow-server:latest infra/images
#
# The server's options come from the compose file: the backend store URI from the environment
# (MLFLOW_BACKEND_STORE_URI, so the password is not on the command line), artifacts proxied with
# --serve-artifacts --artifacts-destination s3://mlflow/ (S3 credentials: AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, endpoint MLFLOW_S3_ENDPOINT_URL), allowed Host headers
# MLFLOW_SERVER_ALLOWED_HOSTS. The official ghcr.io/mlflow/mlflow image would do as a base as
# well, but ships neither driver; a slim Python base keeps the version pin in one place.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Keep equal to the clients' mlflow (pyproject.toml allows >=3.1,<4; the worker image resolves
# it): a server older than its clients may lack the endpoints they call.
ARG MLFLOW_VERSION=3.17.2

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1

RUN pip install "mlflow==${MLFLOW_VERSION}" "psycopg2-binary>=2.9" "boto3>=1.34" \
 && useradd --uid 10002 --user-group --create-home --home-dir /home/mlflow mlflow

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host=0.0.0.0", "--port=5000"]
