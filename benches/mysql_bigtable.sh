#!/usr/bin/env bash
# Peak memory of `cairn mysql backup` on one big table (issue 4: "Backing up a 2 GB table keeps
# cairn's peak memory under 300 MB").
#
# Usage: benches/mysql_bigtable.sh [SIZE_GB] [CAIRN_BINARY]
#   SIZE_GB (default 2, decimals allowed) GiB of SQL dump text in the table; CAIRN_BINARY
#   (default target/release/cairn, built with `cargo build --release` if missing).
# Environment: WORK=DIR scratch space (default /tmp/cairn-bigtable-bench; needs about 3x SIZE_GB
#   free: MariaDB's data plus the repository), KEEP=1 keep it.
#
# Starts a private MariaDB (no networking, its own socket and data directory) and stops it.
# Database `big`, one InnoDB table `t (id BIGINT PRIMARY KEY, n INT, s VARCHAR(200), d DATETIME)`
# filled inside the server from the sequence engine, 1M rows per INSERT ... SELECT; each row is
# ~244 bytes of SQL (s is 200 characters of hex digests, so it compresses about 2:1). Then a
# first and an unchanged `cairn --json mysql backup --databases big` into a fresh local
# repository, each under `/usr/bin/time -v`: wall time and "Maximum resident set size" are
# cairn's own process (time -v does not count children); the mariadb-dump child's peak RSS
# (VmHWM) is sampled from /proc every 0.2 s while it runs. The SQL size is measured once with
# `mariadb-dump ... | wc -c` using cairn's dump arguments. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_GB=${1:-2}
CAIRN=${2:-$ROOT/target/release/cairn}
WORK=${WORK:-/tmp/cairn-bigtable-bench}
ROW_BYTES=244   # SQL bytes per row in the dump, measured (used only to pick the row count)
BATCH=1000000

[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
command -v mariadbd >/dev/null || .ci/install-mariadb.sh
if [ $# -lt 2 ] && [ ! -x "$CAIRN" ]; then cargo build --release --locked -q; fi
[ -x "$CAIRN" ] || { echo "no cairn binary at $CAIRN" >&2; exit 1; }
ROWS=$(awk -v g="$SIZE_GB" -v b="$ROW_BYTES" 'BEGIN { printf "%d", g * 1073741824 / b }')

rm -rf "$WORK"; mkdir -p "$WORK/tmp"
SERVER=
trap '[ -z "$SERVER" ] || { kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; }; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
SOCK=$WORK/mysqld.sock
# A private --tmpdir too: bootstraps sharing /tmp with another server can collide on temp tables.
mariadb-install-db --no-defaults --datadir="$WORK/data" --tmpdir="$WORK/tmp" --user=root \
    --auth-root-authentication-method=normal --skip-test-db > "$WORK/install.log" 2>&1 ||
    { echo "mariadb-install-db failed:" >&2; grep -i error "$WORK/install.log" >&2; exit 1; }
mariadbd --no-defaults --datadir="$WORK/data" --tmpdir="$WORK/tmp" --socket="$SOCK" --pid-file="$WORK/mysqld.pid" \
    --log-error="$WORK/error.log" --skip-networking --user=root --skip-name-resolve \
    --innodb-buffer-pool-size=256M --innodb-log-file-size=512M \
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 &
SERVER=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.2; done
[ -S "$SOCK" ] || { echo "mariadbd did not start; see $WORK/error.log" >&2; tail -5 "$WORK/error.log" >&2; exit 1; }
M="mariadb --no-defaults --socket=$SOCK --user=root"

echo "filling big.t with $ROWS rows (~$SIZE_GB GiB of SQL)" >&2
$M -e "CREATE DATABASE big"
$M big -e "CREATE TABLE t (id BIGINT PRIMARY KEY, n INT NOT NULL, s VARCHAR(200) NOT NULL,
    d DATETIME NOT NULL) ENGINE=InnoDB"
fill_start=$SECONDS
for ((lo = 1; lo <= ROWS; lo += BATCH)); do
    hi=$((lo + BATCH - 1)); [ "$hi" -le "$ROWS" ] || hi=$ROWS
    $M big -e "INSERT INTO t SELECT seq, seq * 7919 % 2000000000,
        LEFT(CONCAT('row ', seq, ' ', SHA2(seq, 512), ' ', SHA1(seq), ' ', MD5(seq)), 200),
        '2020-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_${lo}_to_${hi}"
    echo "  rows $hi/$ROWS ($((SECONDS - fill_start)) s)" >&2
done

# The dump cairn reads (its arguments from src/source/mysql dump_args), measured once.
SQL_BYTES=$(mariadb-dump --no-defaults --socket="$SOCK" --user=root --single-transaction --quick \
    --order-by-primary --skip-dump-date --hex-blob --routines --events --triggers \
    --default-character-set=utf8mb4 --tz-utc --databases big | wc -c)
echo "dump: $SQL_BYTES bytes of SQL" >&2

export CAIRN_PASSWORD=bench CAIRN_INSECURE_TEST_KDF=1
REPO=$WORK/repo CACHE=$WORK/cache
"$CAIRN" -q -r "$REPO" --cache-dir "$CACHE" init

# dump_hwm PID OUT: the highest VmHWM (KiB) of any mariadb-dump child of PID's children (PID is
# /usr/bin/time, its child cairn), sampled until PID exits; written to OUT.
dump_hwm() {
    local top=$1 out=$2 max=0 c d h
    while kill -0 "$top" 2>/dev/null; do
        for c in $(pgrep -P "$top" || true); do
            for d in $(pgrep -x -P "$c" mariadb-dump || true); do
                h=$(awk '/^VmHWM:/ { print $2 }' "/proc/$d/status" 2>/dev/null || true)
                if [ -n "$h" ] && [ "$h" -gt "$max" ]; then max=$h; fi
            done
        done
        echo "$max" > "$out"
        sleep 0.2
    done
}

RESULTS=$WORK/results.tsv
: > "$RESULTS"
backup() { # PHASE
    local phase=$1
    /usr/bin/time -v -o "$WORK/time.$phase" "$CAIRN" -r "$REPO" --cache-dir "$CACHE" --json \
        mysql backup --databases big --socket "$SOCK" --user root \
        > "$WORK/out.$phase.json" 2> "$WORK/err.$phase" &
    local tpid=$!
    dump_hwm "$tpid" "$WORK/dumprss.$phase" &
    local wpid=$!
    if ! wait "$tpid"; then
        echo "FAILED: $phase backup" >&2; tail -20 "$WORK/err.$phase" >&2; exit 1
    fi
    wait "$wpid" || true
    python3 - "$WORK/time.$phase" "$WORK/out.$phase.json" "$(cat "$WORK/dumprss.$phase")" \
        "$(du -sb "$REPO" | cut -f1)" "$phase" >> "$RESULTS" <<'PY'
import json, sys
tv, js, dump_kib, repo, phase = sys.argv[1:]
t = {}
for line in open(tv):
    k, _, v = line.strip().rpartition(": ")
    t[k] = v
wall = 0.0
for part in t["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":"):
    wall = wall * 60 + float(part)
rss = int(t["Maximum resident set size (kbytes)"])
out = json.load(open(js))
s = out.get("summary", out)
print("\t".join(str(x) for x in (phase, f"{wall:.1f}", rss, dump_kib, repo,
      s.get("bytes_read", s.get("bytes", "")), s.get("stored_bytes_added", ""))))
PY
    echo "$phase backup: $(tail -1 "$RESULTS")" >&2
}
backup first
backup unchanged

python3 - "$RESULTS" "$ROWS" "$SQL_BYTES" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
n, sql = int(sys.argv[2]), int(sys.argv[3])
print(f"\nbig.t: {n:,} rows, dump {sql:,} bytes ({sql / 2**30:.2f} GiB) of SQL\n")
print("| backup | SQL bytes read (cairn) | wall time | cairn peak RSS | mariadb-dump peak RSS | repository bytes (du -sb) | bytes added (stored) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for phase, wall, rss, dump, repo, read, added in rows:
    print(f"| {phase} | {int(read):,} | {float(wall):.1f} s | {int(rss) / 1024:.0f} MiB | "
          f"{int(dump) / 1024:.0f} MiB | {int(repo):,} | {int(added):,} |")
PY
