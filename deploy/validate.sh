#!/usr/bin/env bash
# Validates the deployment artifacts, offline: the Dockerfile (hadolint),
# docker-compose.yml (the Compose specification's schema, its mounts and
# services), deploy/haproxy/haproxy.cfg (haproxy -c, where installed), every
# kustomize overlay rendered and checked against the Kubernetes schemas
# (kubernetes-validate --strict) and against each other, every Floodgate
# config they ship (floodgate check-config), the Prometheus config and alert
# rules and the Grafana dashboard (every expression parsed), and that every
# floodgate_* metric they use is one Floodgate defines. deploy/validate.py
# does the checks; see docs/deployment.md.
#
# Environment:
#   FLOODGATE_BIN       the floodgate binary for check-config (default
#                       target/debug/floodgate; built with cargo if missing)
#   DEPLOY_VENV         the tools' venv (default target/deploy-venv)
#   KUBERNETES_VERSION  the schemas' version (default 1.32.0: the kubectl
#                       here; the preStop sleep action needs 1.30 or later)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DEPLOY_VENV:-target/deploy-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
bin="${FLOODGATE_BIN:-${CARGO_TARGET_DIR:-target}/debug/floodgate}"
if [ ! -x "$bin" ]; then
  echo "validate: $bin missing; cargo build -p floodgate"
  cargo build --quiet -p floodgate
fi
command -v kubectl >/dev/null || { echo "validate: kubectl is needed (kubectl kustomize)" >&2; exit 1; }
exec "$venv/bin/python" deploy/validate.py --venv-bin "$venv/bin" --floodgate "$(readlink -f "$bin")" \
  --kubernetes-version "${KUBERNETES_VERSION:-1.32.0}" --work target/deploy-validate
