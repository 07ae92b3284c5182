#!/usr/bin/env bash
# Install an MLflow tracking server as a systemd service (control plane; e.g. an Ubuntu EC2
# instance with an instance profile that can read/write the artifact bucket).
#
#   sudo ./setup_mlflow.sh s3://<artifact-bucket>/mlflow            # install / update
#   ./setup_mlflow.sh --dry-run s3://<artifact-bucket>/mlflow       # print the commands only
#
# Idempotent: re-running converges (user, venv, pinned MLflow, unit file) and restarts the
# service only when its unit changed or MLflow was upgraded. Every location is an option.
set -euo pipefail

MLFLOW_VERSION="3.17.2"        # keep equal to pyproject.toml's mlflow pin
PREFIX="/opt/mlflow"           # venv
DATA_DIR="/var/lib/mlflow"     # SQLite store
SERVICE_USER="mlflow"
HOST="0.0.0.0"
PORT="5000"
BACKEND_STORE=""               # default: sqlite:///$DATA_DIR/mlflow.db
WORKERS="2"
DRY_RUN=0
ARTIFACT_ROOT=""

usage() {
  cat <<EOF
usage: $0 [options] ARTIFACT_ROOT

ARTIFACT_ROOT        where run artifacts and registered models go, e.g. s3://bucket/mlflow
  --dry-run          print the commands that would run, change nothing
  --backend-store URI  MLflow backend store (default sqlite:///$DATA_DIR/mlflow.db)
  --host HOST        bind address (default $HOST; restrict with a security group)
  --port PORT        port (default $PORT)
  --workers N        gunicorn workers (default $WORKERS)
  --prefix DIR       virtualenv location (default $PREFIX)
  --data-dir DIR     state folder for the SQLite store (default $DATA_DIR)
  --user NAME        service account (default $SERVICE_USER)
  --mlflow-version V pinned MLflow version (default $MLFLOW_VERSION)
EOF
}

die() { echo "error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --backend-store) BACKEND_STORE="${2:?--backend-store needs a value}"; shift ;;
    --host) HOST="${2:?--host needs a value}"; shift ;;
    --port) PORT="${2:?--port needs a value}"; shift ;;
    --workers) WORKERS="${2:?--workers needs a value}"; shift ;;
    --prefix) PREFIX="${2:?--prefix needs a value}"; shift ;;
    --data-dir) DATA_DIR="${2:?--data-dir needs a value}"; shift ;;
    --user) SERVICE_USER="${2:?--user needs a value}"; shift ;;
    --mlflow-version) MLFLOW_VERSION="${2:?--mlflow-version needs a value}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$ARTIFACT_ROOT" ] || die "unexpected argument $1"; ARTIFACT_ROOT="$1" ;;
  esac
  shift
done

[ -n "$ARTIFACT_ROOT" ] || die "ARTIFACT_ROOT is required, e.g. s3://my-bucket/mlflow (see --help)"
case "$ARTIFACT_ROOT" in
  s3://?*|file:///*|/*) ;;
  *) die "ARTIFACT_ROOT must be s3://bucket[/prefix] or an absolute path, got '$ARTIFACT_ROOT'" ;;
esac
case "$PORT" in ''|*[!0-9]*) die "--port must be a number, got '$PORT'" ;; esac
BACKEND_STORE="${BACKEND_STORE:-sqlite:///$DATA_DIR/mlflow.db}"
UNIT="/etc/systemd/system/mlflow.service"

quote() { local out=() a; for a in "$@"; do out+=("$(printf '%q' "$a")"); done; echo "${out[*]}"; }

# run CMD...: execute, or print it under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then echo "+ $(quote "$@")"; else "$@"; fi
}

# ensure CHECK... -- CREATE...: run CREATE only when CHECK fails.
ensure() {
  local check=()
  while [ "$1" != "--" ]; do check+=("$1"); shift; done
  shift
  if [ "$DRY_RUN" = 1 ]; then
    echo "+ $(quote "${check[@]}") || $(quote "$@")"
  elif ! "${check[@]}" >/dev/null 2>&1; then
    "$@"
  fi
}

if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0 ...), or pass --dry-run"
fi

unit_text() {
  cat <<EOF
[Unit]
Description=MLflow tracking server (cashier-integrity)
After=network-online.target
Wants=network-online.target

[Service]
User=$SERVICE_USER
Group=$SERVICE_USER
WorkingDirectory=$DATA_DIR
ExecStart=$PREFIX/bin/mlflow server --host $HOST --port $PORT --workers $WORKERS --backend-store-uri $BACKEND_STORE --artifacts-destination $ARTIFACT_ROOT --serve-artifacts
Restart=on-failure
RestartSec=5
NoNewPrivileges=true
ProtectSystem=full
ProtectHome=true

[Install]
WantedBy=multi-user.target
EOF
}

echo "# MLflow $MLFLOW_VERSION on $HOST:$PORT, store $BACKEND_STORE, artifacts $ARTIFACT_ROOT"
export DEBIAN_FRONTEND=noninteractive
ensure dpkg -s python3-venv -- \
  bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv python3-pip"
ensure id -u "$SERVICE_USER" -- useradd --system --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
run install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 750 "$DATA_DIR"
ensure test -x "$PREFIX/bin/python" -- python3 -m venv "$PREFIX"

changed=0
if [ "$DRY_RUN" = 1 ] || ! "$PREFIX/bin/python" -m pip show mlflow 2>/dev/null | grep -qx "Version: $MLFLOW_VERSION"; then
  run "$PREFIX/bin/pip" install --quiet --no-cache-dir "mlflow==$MLFLOW_VERSION" boto3
  changed=1
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "+ write $UNIT:"
  unit_text | sed 's/^/    /'
elif ! unit_text | cmp -s - "$UNIT"; then
  tmp="$(mktemp)"
  unit_text > "$tmp"
  install -m 644 "$tmp" "$UNIT"
  rm -f "$tmp"
  changed=1
fi

run systemctl daemon-reload
run systemctl enable mlflow.service
if [ "$changed" = 1 ]; then
  run systemctl restart mlflow.service
else
  run systemctl start mlflow.service
fi
echo "# MLflow UI/API: http://<this host>:$PORT (set MLFLOW_TRACKING_URI to it)"
