#!/usr/bin/env bash
# Repository growth over a series of nightly database backups (issue 4): `cairn mysql backup`
# (table by table, deterministic, line-aligned chunks) beside restic given the whole dump on
# stdin (`mariadb-dump --single-transaction | restic backup --stdin`), on the same server.
#
# Usage: benches/dumps.sh [NIGHTS] [ROWS]
#   NIGHTS (default 5) nightly changes after the first backup; ROWS (default 200000) rows in
#   each of the two busy tables.
# Environment: WORK=DIR scratch space (default /tmp/cairn-dumps-bench), KEEP=1 keep it,
#   CHUNK_AVG=N cairn's --chunk-avg for the SQL streams (default: the repository's, 64 KiB),
#   CAIRN=PATH a cairn binary to use instead of building the release one,
#   NIGHT=uniform: each night updates 1% of `orders`, spread uniformly, and nothing else
#   (default NIGHT=web, the night described below).
#
# Starts a private MariaDB (no networking, its own socket and data directory) and stops it.
# Database `shop`: `orders` (ROWS rows of ~150 bytes), `events` (an append-only log, ROWS rows),
# `products` (ROWS/10 rows, never touched). Each night: 2% new rows appended to `events`, 0.5%
# of `orders` updated, 80% of them among its newest 10%. Prints the growth of each repository
# per night (the bytes of its files): cairn mysql backup, restic and cairn each with the whole
# dump on stdin, and the night's new and changed rows dumped alone and compressed with `zstd -3`
# (issue 4's yardstick: a night should cost cairn at most 3x that).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NIGHTS=${1:-5}
ROWS=${2:-200000}
WORK=${WORK:-/tmp/cairn-dumps-bench}
command -v restic >/dev/null || apt-get install -y restic >/dev/null
command -v mariadbd >/dev/null || PATH=$PATH:/usr/sbin
command -v mariadbd >/dev/null || .ci/install-mariadb.sh
command -v zstd >/dev/null || apt-get install -y zstd >/dev/null
if [ -z "${CAIRN:-}" ]; then
    cargo build --release --locked -q
    CAIRN=$ROOT/target/release/cairn
fi

rm -rf "$WORK"; mkdir -p "$WORK"
SOCK=$WORK/mysqld.sock
mariadb-install-db --no-defaults --datadir="$WORK/data" --user=root \
    --auth-root-authentication-method=normal --skip-test-db > "$WORK/install.log" 2>&1
mariadbd --no-defaults --datadir="$WORK/data" --socket="$SOCK" --pid-file="$WORK/mysqld.pid" \
    --log-error="$WORK/error.log" --skip-networking --user=root --skip-name-resolve \
    --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.2; done
M="mariadb --no-defaults --socket=$SOCK --user=root"

$M -e "CREATE DATABASE shop"
$M shop -e "
CREATE TABLE orders (id INT PRIMARY KEY, customer INT NOT NULL, amount DECIMAL(10,2) NOT NULL,
    status VARCHAR(20) NOT NULL, note VARCHAR(200) NOT NULL, updated DATETIME NOT NULL);
INSERT INTO orders SELECT seq, seq % 9973, (seq % 100000) / 7, ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'done'),
    CONCAT('order ', seq, ' ', MD5(seq), ' ', SHA1(seq)), '2026-01-01 00:00:00' + INTERVAL seq MINUTE
    FROM seq_1_to_${ROWS};
CREATE TABLE events (id INT PRIMARY KEY, ts DATETIME NOT NULL, kind VARCHAR(20) NOT NULL,
    payload VARCHAR(200) NOT NULL);
INSERT INTO events SELECT seq, '2026-01-01 00:00:00' + INTERVAL seq SECOND, ELT(1 + seq % 3, 'view', 'click', 'buy'),
    CONCAT('{\"user\": ', seq % 5000, ', \"page\": \"/p/', MD5(seq * 7), '\"}') FROM seq_1_to_${ROWS};
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, price DECIMAL(10,2) NOT NULL,
    description TEXT NOT NULL);
INSERT INTO products SELECT seq, CONCAT('product ', seq), seq / 3, REPEAT(MD5(seq), 4)
    FROM seq_1_to_$((ROWS / 10));"

export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export CAIRN_CACHE_DIR=$WORK/cairn-cache RESTIC_CACHE_DIR=$WORK/restic-cache
$CAIRN -q -r "$WORK/cairn-repo" init
$CAIRN -q -r "$WORK/cairn-stdin-repo" init
restic -q -r "$WORK/restic-repo" init
# The bytes of a repository's files: `du -sb` also counts directories, and cairn creates its
# 4 KiB pack directories as packs land in them, which made a night vary by up to ~40 KB.
size() { find "$1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }'; }

D="mariadb-dump --no-defaults --socket=$SOCK --user=root --single-transaction"
night() { # n: apply night n's changes; writes the changed rows' zstd size to $WORK/rows
    local n=$1 add=$((ROWS / 50)) base where
    base=$($M -N shop -e "SELECT MAX(id) FROM events")
    where="(id > $((ROWS * 9 / 10)) AND (id + $n * 7) % 50 = 0) OR (id <= $((ROWS * 9 / 10)) AND (id + $n * 13) % 900 = 0)"
    if [ "${NIGHT:-web}" = uniform ]; then
        where="(id * 7919 + $n * 104729) % 100 = 0"
        add=0
    fi
    [ "$add" -gt 0 ] && $M shop -e "
INSERT INTO events SELECT $base + seq, '2026-06-01 00:00:00' + INTERVAL ($base + seq) SECOND, 'buy',
    CONCAT('{\"user\": ', seq % 5000, ', \"night\": $n, \"h\": \"', MD5(seq + $n), '\"}') FROM seq_1_to_${add};"
    $M shop -e "
UPDATE orders SET status = 'refunded', note = CONCAT(note, ' n$n'), updated = updated + INTERVAL 1 DAY
    WHERE $where;"
    { $D --skip-comments --no-create-info --where="$where" shop orders
      $D --skip-comments --no-create-info --where="id > $base" shop events; } \
        | grep -E '^(INSERT|\()' | zstd -3 -c | wc -c > "$WORK/rows"
}

printf 'night\tcairn_bytes\trestic_bytes\tcairn_stdin_bytes\trows_zst\n' > "$WORK/growth.tsv"
prev_c=$(size "$WORK/cairn-repo"); prev_r=$(size "$WORK/restic-repo"); prev_s=$(size "$WORK/cairn-stdin-repo")
echo 0 > "$WORK/rows"
for n in $(seq 0 "$NIGHTS"); do
    [ "$n" -gt 0 ] && night "$n"
    $CAIRN -q -r "$WORK/cairn-repo" mysql backup --databases shop --socket "$SOCK" --user root \
        ${CHUNK_AVG:+--chunk-avg "$CHUNK_AVG"}
    $D --databases shop | restic -q -r "$WORK/restic-repo" backup --stdin --stdin-filename shop.sql
    $D --databases shop | $CAIRN -q -r "$WORK/cairn-stdin-repo" backup --stdin --stdin-name shop.sql
    c=$(size "$WORK/cairn-repo"); r=$(size "$WORK/restic-repo"); s=$(size "$WORK/cairn-stdin-repo")
    printf '%s\t%s\t%s\t%s\t%s\n' "$n" "$((c - prev_c))" "$((r - prev_r))" "$((s - prev_s))" \
        "$(cat "$WORK/rows")" | tee -a "$WORK/growth.tsv" >&2
    prev_c=$c; prev_r=$r; prev_s=$s
done
DUMP=$(mariadb-dump --no-defaults --socket="$SOCK" --user=root --single-transaction --databases shop | wc -c)

python3 - "$WORK/growth.tsv" "$ROWS" "$DUMP" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
n, dump = int(sys.argv[2]), int(sys.argv[3])
print(f"{n} rows in orders and events, {n // 10} in products; whole dump now {dump / 2**20:.1f} MiB\n")
print("| night | cairn mysql backup | restic, dump on stdin | cairn, dump on stdin | cairn / restic "
      "| changed rows' SQL, zstd -3 | cairn / changed rows |")
print("|---|---:|---:|---:|---:|---:|---:|")
tc = tr = ts = tz = 0
for night, c, r, s, z in rows:
    c, r, s, z = int(c), int(r), int(s), int(z)
    label = "first backup" if night == "0" else f"night {night}"
    per = f"{c / z:.2f}" if z else ""
    print(f"| {label} | {c:,} | {r:,} | {s:,} | {c / r:.2f} | {z:,} | {per} |")
    if night != "0":
        tc += c; tr += r; ts += s; tz += z
if tr:
    print(f"| all nights | {tc:,} | {tr:,} | {ts:,} | {tc / tr:.2f} | {tz:,} | {tc / tz:.2f} |")
PY
