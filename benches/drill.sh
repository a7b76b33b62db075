#!/usr/bin/env bash
# `cairn drill` of a job with a 1M-row table and a file tree (issue 16: "drill of a job with a
# 1M-row table and the bench tree passes and prints its recovery time").
#
# Usage: benches/drill.sh [ROWS] [CAIRN_BINARY]
#   ROWS (default 1000000) rows in table big.t; CAIRN_BINARY (default target/release/cairn,
#   built with `cargo build --release` if missing).
# Environment: WORK=DIR scratch space (default /tmp/cairn-drill-bench), FILES=N files of the
#   tree (default 2000, 1-64 KiB random each, plus one 64 MiB file), TREE=DIR back up this
#   tree instead (e.g. the compare.sh tree, ~/.rustup/toolchains/stable-*), KEEP=1 keep it.
#
# Starts a private MariaDB (its own socket and data directory, no networking), fills the
# table inside the server from the sequence engine, writes cairn.toml with a job over the tree
# and the database, runs the job once, then `cairn --json drill` (which starts its own
# throwaway server) and prints the recovery times as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROWS=${1:-1000000}
CAIRN=${2:-$ROOT/target/release/cairn}
WORK=${WORK:-/tmp/cairn-drill-bench}
FILES=${FILES:-2000}

command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
command -v mariadbd >/dev/null || .ci/install-mariadb.sh
if [ $# -lt 2 ] && [ ! -x "$CAIRN" ]; then cargo build --release --locked -q; fi
[ -x "$CAIRN" ] || { echo "no cairn binary at $CAIRN" >&2; exit 1; }

rm -rf "$WORK"; mkdir -p "$WORK/tmp" "$WORK/scratch"
SERVER=
trap '[ -z "$SERVER" ] || { kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; }; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
SOCK=$WORK/mysqld.sock
mariadb-install-db --no-defaults --datadir="$WORK/data" --tmpdir="$WORK/tmp" --user=root \
    --auth-root-authentication-method=normal --skip-test-db > "$WORK/install.log" 2>&1 ||
    { echo "mariadb-install-db failed:" >&2; grep -i error "$WORK/install.log" >&2; exit 1; }
mariadbd --no-defaults --datadir="$WORK/data" --tmpdir="$WORK/tmp" --socket="$SOCK" \
    --pid-file="$WORK/mysqld.pid" --log-error="$WORK/error.log" --skip-networking --user=root \
    --skip-name-resolve --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=0 \
    --innodb-doublewrite=0 &
SERVER=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.2; done
[ -S "$SOCK" ] || { echo "mariadbd did not start; see $WORK/error.log" >&2; exit 1; }
M="mariadb --no-defaults --socket=$SOCK --user=root"
echo "filling big.t with $ROWS rows" >&2
$M -e "CREATE DATABASE big"
$M big -e "CREATE TABLE t (id BIGINT PRIMARY KEY, n INT NOT NULL, s VARCHAR(100) NOT NULL,
    d DATETIME NOT NULL) ENGINE=InnoDB;
    INSERT INTO t SELECT seq, seq * 7919 % 2000000000, SHA1(seq),
        '2026-01-01' + INTERVAL (seq % 100000) MINUTE FROM seq_1_to_$ROWS;
    CREATE TABLE small (id INT PRIMARY KEY, v TEXT);
    INSERT INTO small SELECT seq, CONCAT('row ', seq) FROM seq_1_to_1000;"

if [ -n "${TREE:-}" ]; then
    echo "files source: $TREE" >&2
else
    TREE=$WORK/tree
    echo "writing $FILES files" >&2
    mkdir -p "$TREE"
    for ((i = 0; i < FILES; i++)); do
        d="$TREE/d$((i % 50))"; mkdir -p "$d"
        head -c $(( (i * 7919 % 64 + 1) * 1024 )) /dev/urandom > "$d/f$i"
    done
    head -c $((64 << 20)) /dev/urandom > "$TREE/big.bin"
fi
printf 'bench-password\n' > "$WORK/password"; chmod 600 "$WORK/password"
cat > "$WORK/cairn.toml" <<TOML
[settings]
state-dir = "$WORK/state"

[repositories.local]
url = "$WORK/repo"
password-file = "$WORK/password"

[sources.files]
kind = "files"
paths = ["$TREE"]

[sources.db]
kind = "mysql"
socket = "$SOCK"
user = "root"
databases = ["big"]

[jobs.bench]
sources = ["files", "db"]
repository = "local"
TOML
C="$CAIRN --config $WORK/cairn.toml --cache-dir $WORK/cache"
$C -r local init >/dev/null
t0=$SECONDS; $C run bench >/dev/null; echo "backup: $((SECONDS - t0)) s" >&2
TMPDIR=$WORK/scratch $C --json drill bench > "$WORK/drill.json" || true
python3 - "$WORK/drill.json" "$ROWS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
files = sum(s["files"] for s in r["sources"] if s["kind"] == "files")
mib = sum(s["bytes"] for s in r["sources"] if s["kind"] == "files") / 2**20
print(f"| rows | files | drill ok | files (s) | database (s) | recovery (s) | target (s) |")
print(f"|---|---|---|---|---|---|---|")
print(f"| {sys.argv[2]} | {files} ({mib:.0f} MiB) | {r['ok']} | {r['files_seconds']:.1f} | "
      f"{r['database_seconds']:.1f} | {r['recovery_seconds']:.1f} | {r['rto_seconds']:.0f} |")
for p in r.get("problems", []):
    print("problem:", p)
PY
