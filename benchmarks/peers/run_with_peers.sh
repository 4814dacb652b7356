#!/usr/bin/env bash
# Run pgtasks side by side with the peers (pgqueuer, procrastinate, DBOS, Celery, raw SQL) in one
# run of the shared harness, so that every figure is a ratio measured in the same run.
#
#   benchmarks/peers/run_with_peers.sh [run_peers.py options...]
#   benchmarks/peers/run_with_peers.sh --systems raw-sql,pgqueuer,pgtasks --n 20000
#
# The shared harness (../shared/bench, read-only) is copied to $BENCH_DIR/harness-pgtasks; this
# directory's pgtasks_bench.py is added to its adapters and registered in its run_peers.py as
# "pgtasks" (venv $BENCH_DIR/venvs/pgtasks, this checkout installed editable). The servers are
# the harness's own: start them first with ../shared/bench/services.sh start.
# Results: $BENCH_DIR/results-pgtasks.{json,md} unless --out/--md are given.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SHARED=${PGTASKS_BENCH_HARNESS:-$(cd "$REPO/../shared/bench" && pwd)}
BASE=${BENCH_DIR:-/tmp/bench}
COPY=$BASE/harness-pgtasks

rm -rf "$COPY"
mkdir -p "$COPY"
cp -r "$SHARED"/. "$COPY"/
cp "$HERE/pgtasks_bench.py" "$COPY/adapters/"

python3 - "$COPY/run_peers.py" "$REPO" <<'PY'
import sys
path, repo = sys.argv[1], sys.argv[2]
text = open(path).read()
anchor = "SYSTEMS: dict[str, System] = {\n"
requirements = f'["-e", "{repo}", "psycopg[binary]==3.3.9"]'
entry = (
    f'    "pgtasks": System("pgtasks", "pgtasks_bench", {requirements},\n'
    '                      note="recommended set-up: 2 worker processes x 8 threads"),\n'
    f'    "pgtasks-1x16": System("pgtasks", "pgtasks_bench", {requirements},\n'
    '                           env={"BENCH_PGTASKS_WORKERS": "1", '
    '"BENCH_PGTASKS_CONCURRENCY": "16"},\n'
    '                           note="variant: 1 worker process x 16 threads"),\n'
)
assert anchor in text, "run_peers.py changed: cannot register pgtasks"
text = text.replace(anchor, anchor + entry, 1)
text = text.replace('DEFAULT_SYSTEMS = ("raw-sql,', 'DEFAULT_SYSTEMS = ("raw-sql,pgtasks,pgtasks-1x16,', 1)
open(path, "w").write(text)
PY

# The venv is created once; an editable install follows this checkout's code from then on.
python3 "$COPY/run_peers.py" --setup --systems pgtasks

has_option() { for a in "$@"; do case "$a" in --out|--out=*) return 0;; esac; done; return 1; }
extra=()
if ! has_option "$@"; then
  extra=(--out "$BASE/results-pgtasks.json" --md "$BASE/results-pgtasks.md")
fi
exec python3 "$COPY/run_peers.py" "${extra[@]}" "$@"
