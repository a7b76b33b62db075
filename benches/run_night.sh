#!/usr/bin/env bash
# What an unchanged night of `cairn run` costs beside the separate commands it replaces (issue
# 14: "an unchanged night of `cairn run` over the benches/compare.sh tree plus a shop database
# costs at most 1.1x the wall time of the separate `backup` and `mysql backup` commands run one
# after the other (it should be less, since they run concurrently)").
#
# Usage: benches/run_night.sh [SOURCE_DIR...]
#   default sources: those of benches/compare.sh, the Rust toolchains under
#   ~/.rustup/toolchains/stable-* and nightly-* (a few GB of real files)
# Environment:
#   WORK=DIR        scratch space (default /tmp/cairn-run-night; needs ~1.5x the data size)
#   ROUNDS=N        measured rounds (default 3)
#   ORDERS=N        rows of shop.orders (default 200000; order_items has 3 per order)
#   CAIRN=PATH      a cairn binary to use instead of building the release one
#   SETTLE=SECONDS  pause after copying the data and filling the database (default 120)
#   KEEP=1          keep the scratch directory
#
# Copies the sources into WORK/data (cp -a) and starts a private MariaDB (no networking, its own
# socket, data and tmp directory; stopped at exit) with a database `shop`: customers, products,
# orders and order_items, InnoDB, filled from the sequence engine (some tens of MB of SQL). Writes
# WORK/cairn.toml: repository `local` (WORK/repo), sources `files` (the data) and `shop` (the
# database over the socket as root), job `nightly` with forget = false, prune = false,
# check = "none" and no copy-to, so the job's cost is the two backups alone. Password from
# CAIRN_PASSWORD (the file says password = "${CAIRN_PASSWORD}"), cache and state directories
# in WORK.
#
# Phases, each timed with /usr/bin/time (wall seconds, peak RSS of the largest process), page
# cache dropped before each: a first `cairn run nightly` (the warm-up; not compared), then ROUNDS
# rounds of (1) the separate commands, `cairn backup DATA` followed by `cairn mysql backup
# --databases shop` (timed each, summed; the cache is dropped once before the pair, as a cron
# job would run them back to back) and (2) `cairn --config F run nightly`, in alternating order
# (separate first in odd rounds). Every night is unchanged: a files backup picks its parent by
# host and paths (the run's snapshots too, whatever their tags), and the script fails if a
# separate files backup found no parent or any new or changed file. Prints a Markdown table: per
# round both wall times and run/separate, and each backup's own duration alone and inside the run
# (its snapshot's backup_start..backup_end: the run's steps each report the time until the last
# of its concurrent backups ended), then the median ratio and the peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/cairn-run-night}
ROUNDS=${ROUNDS:-3}
ORDERS=${ORDERS:-200000}

[ -x /usr/bin/time ] || apt-get install -y time >/dev/null
command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
command -v mariadbd >/dev/null || .ci/install-mariadb.sh
if [ -z "${CAIRN:-}" ]; then
    cargo build --release --locked -q
    CAIRN=$ROOT/target/release/cairn
fi
[ -x "$CAIRN" ] || { echo "no cairn binary at $CAIRN" >&2; exit 1; }

if [ $# -gt 0 ]; then SOURCES=("$@"); else
    SOURCES=()
    for d in "$HOME"/.rustup/toolchains/stable-* "$HOME"/.rustup/toolchains/nightly-*; do
        [ -d "$d" ] && SOURCES+=("$d")
    done
fi
[ ${#SOURCES[@]} -gt 0 ] || { echo "no source directories" >&2; exit 1; }

rm -rf "$WORK"; mkdir -p "$WORK"
WORK=$(realpath "$WORK")   # the snapshots' paths, and so the parent lookup, use this spelling
DATA=$WORK/data SOCK=$WORK/mysqld.sock REPO=$WORK/repo CONF=$WORK/cairn.toml
SERVER=
trap '[ -z "$SERVER" ] || { kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; }; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT

mkdir -p "$DATA"
for s in "${SOURCES[@]}"; do cp -a "$s" "$DATA/"; done
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
DATA_FILES=$(find "$DATA" -type f | wc -l)

# The private server (flags as benches/mysql_bigtable.sh and tests/common/mysql.rs).
mkdir -p "$WORK/tmp"
mariadb-install-db --no-defaults --datadir="$WORK/db" --tmpdir="$WORK/tmp" --user=root \
    --auth-root-authentication-method=normal --skip-test-db > "$WORK/install.log" 2>&1 ||
    { echo "mariadb-install-db failed:" >&2; grep -i error "$WORK/install.log" >&2; exit 1; }
mariadbd --no-defaults --datadir="$WORK/db" --tmpdir="$WORK/tmp" --socket="$SOCK" \
    --pid-file="$WORK/mysqld.pid" --log-error="$WORK/error.log" --skip-networking --user=root \
    --skip-name-resolve --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=0 \
    --innodb-doublewrite=0 &
SERVER=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.2; done
[ -S "$SOCK" ] || { echo "mariadbd did not start; see $WORK/error.log" >&2; tail -5 "$WORK/error.log" >&2; exit 1; }
M="mariadb --no-defaults --socket=$SOCK --user=root"

echo "filling shop ($ORDERS orders)" >&2
CUSTOMERS=$((ORDERS / 4)) PRODUCTS=5000 ITEMS=$((ORDERS * 3))
$M -e "CREATE DATABASE shop"
$M shop -e "
CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(80) NOT NULL, email VARCHAR(120) NOT NULL,
    city VARCHAR(40) NOT NULL, created DATETIME NOT NULL) ENGINE=InnoDB;
INSERT INTO customers SELECT seq, CONCAT('Customer ', seq, ' ', LEFT(MD5(seq), 8)),
    CONCAT('c', seq, '@', LEFT(SHA1(seq), 10), '.example'),
    ELT(1 + seq % 6, 'Berlin', 'Paris', 'Lyon', 'Madrid', 'Rome', 'Vienna'),
    '2020-01-01 00:00:00' + INTERVAL seq * 37 MINUTE FROM seq_1_to_${CUSTOMERS};
CREATE TABLE products (id INT PRIMARY KEY, sku VARCHAR(20) NOT NULL, name VARCHAR(100) NOT NULL,
    price DECIMAL(10,2) NOT NULL, description VARCHAR(255) NOT NULL) ENGINE=InnoDB;
INSERT INTO products SELECT seq, CONCAT('SKU-', LPAD(seq, 6, '0')), CONCAT('Product ', MD5(seq)),
    (seq * 7919 % 100000) / 100, CONCAT('A fine product. ', SHA2(seq, 256))
    FROM seq_1_to_${PRODUCTS};
CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT NOT NULL, status VARCHAR(20) NOT NULL,
    total DECIMAL(10,2) NOT NULL, placed DATETIME NOT NULL, note VARCHAR(120) NOT NULL,
    KEY (customer_id)) ENGINE=InnoDB;
INSERT INTO orders SELECT seq, 1 + seq * 31 % ${CUSTOMERS},
    ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'done'), (seq * 104729 % 5000000) / 100,
    '2024-01-01 00:00:00' + INTERVAL seq * 3 MINUTE, CONCAT('order ', seq, ' ', MD5(seq * 3))
    FROM seq_1_to_${ORDERS};
CREATE TABLE order_items (order_id INT NOT NULL, line INT NOT NULL, product_id INT NOT NULL,
    qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, PRIMARY KEY (order_id, line)) ENGINE=InnoDB;
INSERT INTO order_items SELECT (seq - 1) DIV 3 + 1, (seq - 1) % 3 + 1, 1 + seq * 17 % ${PRODUCTS},
    1 + seq % 5, (seq * 7919 % 100000) / 100 FROM seq_1_to_${ITEMS};"
SQL_BYTES=$(mariadb-dump --no-defaults --socket="$SOCK" --user=root --single-transaction \
    --databases shop | wc -c)

# The copy is GBs of writes the disk keeps flushing after `sync` returns (see compare.sh).
sync; sleep "${SETTLE:-120}"

export CAIRN_PASSWORD=bench CAIRN_CACHE_DIR=$WORK/cache CAIRN_STATE_DIR=$WORK/state
# No other configuration file may leak into the separate commands. The repository's password is
# a reference to CAIRN_PASSWORD: `cairn run` opens the job's repository by name with the table's
# own password settings only, and does not read CAIRN_PASSWORD itself (14334fc).
export XDG_CONFIG_HOME=$WORK/xdg-config
unset CAIRN_CONFIG CAIRN_REPO CAIRN_PASSWORD_FILE
cat > "$CONF" <<EOF
[settings]
repository = "local"
cache-dir = "$WORK/cache"
state-dir = "$WORK/state"

[repositories.local]
url = "$REPO"
password = "\${CAIRN_PASSWORD}"

[sources.files]
kind = "files"
paths = ["$DATA"]

[sources.shop]
kind = "mysql"
socket = "$SOCK"
user = "root"
databases = ["shop"]

[jobs.nightly]
sources = ["files", "shop"]
repository = "local"
forget = false
prune = false
check = "none"
EOF
"$CAIRN" --config "$CONF" config check >&2
"$CAIRN" -q -r "$REPO" init >/dev/null

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

# timed NAME cmd...: run it under /usr/bin/time; its stdout to $OUT/out.NAME, "secs rss" in
# $OUT/time.NAME. (A directory of their own: files created in WORK would change its mtime and
# so give every night a new tree for it.)
OUT=$WORK/out
mkdir -p "$OUT"
timed() {
    local name=$1; shift
    if ! /usr/bin/time -f "%e %M" -o "$OUT/time.$name" "$@" > "$OUT/out.$name" 2> "$OUT/log.$name"; then
        echo "FAILED: $name (see $OUT/log.$name)" >&2
        tail -20 "$OUT/log.$name" >&2
        exit 1
    fi
    echo "$name: $(tail -1 "$OUT/time.$name") (s, KiB)" >&2
}

run_job() { # NAME
    drop_caches
    timed "$1" "$CAIRN" --config "$CONF" --json run nightly
}

separate() { # NAME
    drop_caches
    timed "$1.files" "$CAIRN" -r "$REPO" --json backup "$DATA" --tag bench=separate
    timed "$1.db" "$CAIRN" -r "$REPO" --json mysql backup --socket "$SOCK" --user root \
        --databases shop --tag bench=separate
    # Truly unchanged: a parent, and no file new or changed.
    python3 - "$OUT/out.$1.files" <<'PY'
import json, sys
v = json.load(open(sys.argv[1])); s = v["summary"]
if not v.get("parent") or s["files_new"] or s["files_changed"]:
    sys.exit(f"{sys.argv[1]}: not an unchanged night: parent {v.get('parent')}, "
             f"{s['files_new']} new, {s['files_changed']} changed files")
PY
}

run_job warmup
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then separate "sep$r"; run_job "run$r"; else run_job "run$r"; separate "sep$r"; fi
done
# Each snapshot's own backup_start..backup_end: the time of each source inside a run (the run's
# steps all report the time until the last of the concurrent backups ended).
"$CAIRN" -r "$REPO" --json snapshots > "$OUT/snapshots.json"

python3 - "$OUT" "$ROUNDS" "$DATA_BYTES" "$DATA_FILES" "$SQL_BYTES" "$ORDERS" <<'PY'
import json, statistics, sys
from datetime import datetime
work, rounds = sys.argv[1], int(sys.argv[2])
data_bytes, data_files, sql_bytes, orders = map(int, sys.argv[3:])
def t(name):
    s, rss = open(f"{work}/time.{name}").read().split()[-2:]
    return float(s), int(rss)
def out(name):
    return json.load(open(f"{work}/out.{name}"))
def when(ts):  # RFC 3339 with nanoseconds, UTC
    whole, _, frac = ts.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).timestamp() + float("0." + (frac or "0"))
snaps = {x["id"]: x for x in json.load(open(f"{work}/snapshots.json"))}
def secs(snap_id):
    s = snaps[snap_id]["summary"]
    return when(s["backup_end"]) - when(s["backup_start"])
def run(name):
    r = out(name)
    if r["outcome"] != "success":
        sys.exit(f"run {name}: outcome {r['outcome']}: {r['steps']}")
    return {s["name"]: s for s in r["steps"]}, dict(r["snapshots"])
print(f"Data: {data_bytes / 2**30:.2f} GiB in {data_files} files; shop: {orders} orders, "
      f"{3 * orders} order items, {sql_bytes / 2**20:.1f} MiB of SQL\n")
w, wrss = t("warmup")
_, wsn = run("warmup")
print(f"First run (warm-up, not compared): {w:.1f} s, {wrss / 1024:.0f} MiB peak RSS; the files "
      f"backup {secs(wsn['files']):.1f} s, the database {secs(wsn['shop']):.1f} s\n")
print("| round | order | separate: backup + mysql backup | run | run / separate "
      "| files backup alone / in the run | database alone / in the run "
      "| stored bytes added: separate / run |")
print("|---|---|---|---|---|---|---|---|")
ratios, sep_rss, run_rss = [], [], []
for r in range(1, rounds + 1):
    fs, frss = t(f"sep{r}.files"); ds, drss = t(f"sep{r}.db"); rs, rrss = t(f"run{r}")
    fo, do = out(f"sep{r}.files"), out(f"sep{r}.db")
    st, sn = run(f"run{r}")
    sep = fs + ds
    ratios.append(rs / sep); sep_rss.append(max(frss, drss)); run_rss.append(rrss)
    order = "separate, run" if r % 2 else "run, separate"
    if st["backup files"]["bytes_read"]:
        print(f"WARNING: run {r} read {st['backup files']['bytes_read']} bytes of files", file=sys.stderr)
    sep_added = fo["summary"]["stored_bytes_added"] + do["summary"]["stored_bytes_added"]
    run_added = st["backup files"]["bytes_added"] + st["backup shop"]["bytes_added"]
    print(f"| {r} | {order} | {sep:.2f} s = {fs:.2f} + {ds:.2f} | {rs:.2f} s | {rs / sep:.2f}x "
          f"| {secs(fo['snapshot_id']):.2f} / {secs(sn['files']):.2f} s "
          f"| {secs(do['snapshot_id']):.2f} / {secs(sn['shop']):.2f} s | {sep_added:,} / {run_added:,} |")
print(f"\nMedian run / separate: {statistics.median(ratios):.2f}x (target: at most 1.10x; "
      f"range {min(ratios):.2f}-{max(ratios):.2f}x)")
print(f"Peak RSS: separate {max(sep_rss) / 1024:.0f} MiB (the largest process of either command), "
      f"run {max(run_rss) / 1024:.0f} MiB")
PY
