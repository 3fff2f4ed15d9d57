#!/usr/bin/env bash
# Submit a meltrca job to any Spark master: packages the code, the Python environment and the
# JVM jars, then calls spark-submit.
#
#   ./spark-submit.sh [options] JOB [job args...]
#
#   JOB          a meltrca subcommand (run, ingest, features, detect, rca, explain, evaluate, report,
#                queue, generate) or a jobs/ file name (anomaly_detection, generate_data, ...)
#   --master M   local[*] (default), spark://host:7077, yarn, k8s://https://host:port
#   --deploy-mode client|cluster   (default client)
#   --conf k=v   extra Spark settings (repeatable)
#   --no-pack    executors use this machine's .venv python instead of a packed environment
#                (only for executors on this machine, e.g. a loopback standalone cluster)
#   --packages   ship Maven coordinates (spark.jars.packages) instead of the local .jars folder
#   --dry-run    print the spark-submit command instead of running it (builds nothing)
#   --build-only build the code zip and the packed environment, then exit (no JOB needed;
#                CI and tests call it once so that the ~95 s packing is not inside a job)
#
# Environment: SPARK_HOME (default: the venv's PySpark), VENV (default .venv), BUILD (default build).
# The packed environment (build/dist/meltrca-env.tar.gz, made with venv-pack from a runtime-only
# venv) is rebuilt only when setup.py changes. Its python links to this machine's interpreter prefix;
# on a cluster, nodes need Python 3.11 at the same prefix (or rebuild with PACK_PYTHON_PREFIX=/usr).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${VENV:-$ROOT/.venv}"
BUILD="${BUILD:-$ROOT/build}"
DIST="$BUILD/dist"
PY="$VENV/bin/python"

die() { echo "spark-submit.sh: error: $*" >&2; exit 2; }

MASTER="local[*]"; DEPLOY_MODE="client"; PACK=1; PACKAGES=0; DRY=0; BUILD_ONLY=0; CONFS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --master) MASTER="${2:?--master needs a value}"; shift 2 ;;
    --deploy-mode) DEPLOY_MODE="${2:?--deploy-mode needs a value}"; shift 2 ;;
    --conf) CONFS+=(--conf "${2:?--conf needs k=v}"); shift 2 ;;
    --no-pack) PACK=0; shift ;;
    --packages) PACKAGES=1; shift ;;
    --dry-run) DRY=1; shift ;;
    --build-only) BUILD_ONLY=1; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 || "$BUILD_ONLY" == 1 ]] || die "no JOB given (see --help)"
JOB="${1:-run}"; [[ $# -ge 1 ]] && shift
[[ -x "$PY" ]] || die "no virtualenv at $VENV: run \`make setup\` first"

# subcommand -> jobs/ file (kept in step with lib/meltrca/cli.py)
JOB_FILE="$("$PY" -c 'import sys; from meltrca.cli import SUBCOMMANDS as S; print(S[sys.argv[1]][0] if sys.argv[1] in S else sys.argv[1])' "$JOB")"
[[ -f "$ROOT/jobs/$JOB_FILE.py" ]] || die "unknown job '$JOB'"

SPARK_HOME="${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}"
export SPARK_HOME
mkdir -p "$DIST"

# 1. code: lib/meltrca + jobs (as meltrca_jobs) + conf, one zip for --py-files. Each zip is
# written next to its final name and renamed, so concurrent submissions never read a half file.
CODE_ZIP="$DIST/meltrca-code.zip"
CONF_ZIP="$DIST/meltrca-conf.zip"
if [[ "$DRY" == 0 ]]; then
  (
    tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
    cp -r "$ROOT/lib/meltrca" "$tmp/meltrca"
    cp -r "$ROOT/jobs" "$tmp/meltrca_jobs"
    find "$tmp" -name '__pycache__' -prune -exec rm -rf {} +
    (cd "$tmp" && "$PY" -m zipfile -c "$tmp/code.zip" meltrca meltrca_jobs)
    (cd "$ROOT" && "$PY" -m zipfile -c "$tmp/conf.zip" conf)
    mv -f "$tmp/code.zip" "$CODE_ZIP.$$" && mv -f "$CODE_ZIP.$$" "$CODE_ZIP"
    mv -f "$tmp/conf.zip" "$CONF_ZIP.$$" && mv -f "$CONF_ZIP.$$" "$CONF_ZIP"
  )
fi

ARGS=(--master "$MASTER" --deploy-mode "$DEPLOY_MODE" --name "meltrca-$JOB" --py-files "$CODE_ZIP")
ARCHIVES="$CONF_ZIP#meltrca-conf"
ARGS+=(--conf "spark.executorEnv.MELTRCA_CONF_DIR=meltrca-conf/conf")

# 2. Python environment for the executors
if [[ "$PACK" == 1 ]]; then
  ENV_TGZ="$DIST/meltrca-env.tar.gz"
  STAMP="$DIST/meltrca-env.stamp"
  WANT="$(sha256sum "$ROOT/setup.py" | cut -d' ' -f1)"
  # One packer at a time (concurrent submissions wait for it, then reuse its result).
  [[ "$DRY" == 1 ]] || { exec 9>"$DIST/.pack.lock"; flock 9; }
  if [[ "$DRY" == 0 && ( ! -f "$ENV_TGZ" || "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ) ]]; then
    echo "spark-submit.sh: packing the Python environment (once per setup.py change)..." >&2
    rm -rf "$BUILD/pack-venv"
    "$PY" -m venv "$BUILD/pack-venv"
    "$BUILD/pack-venv/bin/python" -m pip install -q --upgrade pip
    # Runtime dependencies only; meltrca itself ships in the code zip.
    "$BUILD/pack-venv/bin/python" -m pip install -q $("$PY" -c 'import ast,sys
src=open(sys.argv[1]).read(); tree=ast.parse(src)
for n in ast.walk(tree):
    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RUNTIME":
        print(" ".join(ast.literal_eval(n.value)))' "$ROOT/setup.py") venv-pack==0.2.0
    "$BUILD/pack-venv/bin/venv-pack" -q -p "$BUILD/pack-venv" -o "$ENV_TGZ" --force --compress-level 1 \
      ${PACK_PYTHON_PREFIX:+--python-prefix "$PACK_PYTHON_PREFIX"} \
      --exclude 'lib/python3.11/site-packages/pyspark/jars/*' \
      --exclude 'lib/python3.11/site-packages/tensorflow/include/*' \
      --exclude 'lib/python3.11/site-packages/clang/*'
    echo "$WANT" > "$STAMP"
  fi
  [[ "$DRY" == 1 ]] || flock -u 9
  ARCHIVES="$ARCHIVES,$ENV_TGZ#environment"
  ARGS+=(--conf "spark.pyspark.python=./environment/bin/python")
else
  ARGS+=(--conf "spark.pyspark.python=$PY")
fi
ARGS+=(--archives "$ARCHIVES")
if [[ "$BUILD_ONLY" == 1 ]]; then
  echo "spark-submit.sh: built $CODE_ZIP${ENV_TGZ:+ and $ENV_TGZ}" >&2
  exit 0
fi
# The driver imports meltrca from the code zip too, so it is told where conf/ is: this checkout
# in client mode, the shipped archive in cluster mode (YARN application master / k8s driver pod).
DRIVER_ENV=()
if [[ "$DEPLOY_MODE" == "client" ]]; then
  ARGS+=(--conf "spark.pyspark.driver.python=$PY")
  DRIVER_ENV=(env "MELTRCA_CONF_DIR=${MELTRCA_CONF_DIR:-$ROOT/conf}")
else
  ARGS+=(--conf "spark.yarn.appMasterEnv.MELTRCA_CONF_DIR=meltrca-conf/conf")
  ARGS+=(--conf "spark.kubernetes.driverEnv.MELTRCA_CONF_DIR=meltrca-conf/conf")
fi

# 3. JVM jars: the local folder from `make jars`, or Maven coordinates
JARS_DIR="${MELTRCA_JARS_DIR:-$ROOT/.jars}"
if [[ "$PACKAGES" == 1 ]]; then
  COORDS="$("$PY" -c 'from meltrca.spark import JVM_PACKAGES, spark_minor; print(JVM_PACKAGES[spark_minor()]["delta"])')"
  ARGS+=(--packages "$COORDS")
else
  JARS="$(ls "$JARS_DIR"/*.jar 2>/dev/null | paste -sd, -)"
  [[ -n "$JARS" ]] || die "no jars in $JARS_DIR: run \`make setup\` (or use --packages on a cluster with internet)"
  ARGS+=(--jars "$JARS")
fi

# 4. meltrca's own Spark settings (Delta, UTC, Arrow, logs) so that every master gets them
while IFS= read -r kv; do ARGS+=(--conf "$kv"); done < <("$PY" - <<'EOF'
from meltrca.config import load_settings
from meltrca.spark import session_conf
# spark.driver.memory stays: spark-submit applies it before starting the driver JVM.
skip = {"spark.master", "spark.app.name", "spark.jars", "spark.jars.packages"}
for k, v in session_conf(load_settings()).items():
    if k not in skip:
        print(f"{k}={v}")
EOF
)

CMD=("${DRIVER_ENV[@]}" "$SPARK_HOME/bin/spark-submit" "${ARGS[@]}" "${CONFS[@]}" "$ROOT/jobs/$JOB_FILE.py" "$@")
if [[ "$DRY" == 1 ]]; then
  printf '%q ' "${CMD[@]}"; echo
  exit 0
fi
exec "${CMD[@]}"
