#!/usr/bin/env bash
# cairn beside restic on a real S3 server (s3s-fs on 127.0.0.1), same data, one run: first
# backup, unchanged re-backup and full restore, with wall time, throughput, peak RSS and the
# number of S3 requests each tool made (per operation, and per GiB of data).
#
# Usage: benches/s3.sh [SOURCE_DIR...]   (also run by `WITH_S3=1 benches/compare.sh`)
#   default source: the stable Rust toolchain under ~/.rustup/toolchains (about 1.4 GB)
# Environment: WORK=DIR scratch space (default /tmp/cairn-s3-bench), KEEP=1 keep it.
#
# Requests are counted from the server's own log (s3s logs every routed request at debug
# level), so both tools are counted the same way; the logging costs the server some time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/cairn-s3-bench}
command -v restic >/dev/null && [ -x /usr/bin/time ] || apt-get install -y restic time >/dev/null
command -v s3s-fs >/dev/null || .ci/install-s3s.sh
cargo build --release --locked -q
CAIRN=$ROOT/target/release/cairn

if [ $# -gt 0 ]; then SOURCES=("$@"); else
    SOURCES=("$HOME"/.rustup/toolchains/stable-*)
fi
rm -rf "$WORK"; mkdir -p "$WORK/s3/bench" "$WORK/data"
for s in "${SOURCES[@]}"; do cp -a "$s" "$WORK/data/"; done
DATA=$WORK/data
DATA_BYTES=$(du -sb "$DATA" | cut -f1)

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$WORK/s3.log
RUST_LOG=s3s::ops=debug s3s-fs --host 127.0.0.1 --port "$PORT" --access-key bench-access \
    --secret-key bench-secret-key "$WORK/s3" > "$LOG" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"' EXIT
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
    sleep 0.1
done

export AWS_ACCESS_KEY_ID=bench-access AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export CAIRN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password
export CAIRN_CACHE_DIR=$WORK/cairn-cache RESTIC_CACHE_DIR=$WORK/restic-cache
CREPO=s3://bench/cairn
RREPO=s3:http://127.0.0.1:$PORT/bench/restic

RESULTS=$WORK/results.tsv
: > "$RESULTS"
ops() { grep -c 'resolved route, op:' "$LOG" || true; }
# run TOOL PHASE cmd...: time it and count the requests it made
run() {
    local tool=$1 phase=$2; shift 2
    sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    local before; before=$(ops)
    local mark; mark=$(wc -l < "$LOG")
    if ! /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" > "$WORK/log.$tool.$phase" 2>&1; then
        echo "FAILED: $tool $phase" >&2; tail -5 "$WORK/log.$tool.$phase" >&2; exit 1
    fi
    local n=$(( $(ops) - before ))
    local kinds; kinds=$(tail -n +"$((mark + 1))" "$LOG" | grep -o 'resolved route, op: [A-Za-z0-9]*' \
        | awk '{print $4}' | sort | uniq -c | awk '{printf "%s%s=%s", sep, $2, $1; sep=" "}')
    read -r secs rss < "$WORK/time"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$phase" "$secs" "$rss" "$n" "$kinds" >> "$RESULTS"
    printf '%-7s %-10s %8ss %6s MiB RSS %7s requests (%s)\n' "$tool" "$phase" "$secs" "$((rss / 1024))" "$n" "$kinds" >&2
}

$CAIRN -q -r "$CREPO" init
restic -q -r "$RREPO" init
run cairn first "$CAIRN" -q -r "$CREPO" backup "$DATA"
run restic first restic -q -r "$RREPO" backup "$DATA"
run cairn unchanged "$CAIRN" -q -r "$CREPO" backup "$DATA"
run restic unchanged restic -q -r "$RREPO" backup "$DATA"
run cairn restore "$CAIRN" -q -r "$CREPO" restore latest --target "$WORK/restore-cairn"
run restic restore restic -q -r "$RREPO" restore latest --target "$WORK/restore-restic"
diff -r "$DATA" "$WORK/restore-cairn$DATA" >/dev/null || { echo "cairn restore differs from the data!" >&2; exit 1; }
CSIZE=$(du -sb "$WORK/s3/bench/cairn" | cut -f1)
RSIZE=$(du -sb "$WORK/s3/bench/restic" | cut -f1)

python3 - "$RESULTS" "$DATA_BYTES" "$CSIZE" "$RSIZE" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data, csize, rsize = map(int, sys.argv[2:])
t = {(r[0], r[1]): (float(r[2]), int(r[3]), int(r[4]), r[5] if len(r) > 5 else "") for r in rows}
gib = data / 2**30
print(f"Data: {gib:.2f} GiB; bucket after: cairn {csize/2**20:.0f} MiB, restic {rsize/2**20:.0f} MiB\n")
print("| phase | cairn time | cairn MiB/s | cairn RSS | cairn requests (per GiB) | restic time | restic MiB/s | restic RSS | restic requests (per GiB) | cairn vs restic |")
print("|---|---|---|---|---|---|---|---|---|---|")
for ph in ("first", "unchanged", "restore"):
    cells = []
    for tool in ("cairn", "restic"):
        s, rss, n, _ = t[(tool, ph)]
        cells += [f"{s:.1f} s", f"{data/2**20/s:.0f}", f"{rss/1024:.0f} MiB", f"{n} ({n/gib:.0f})"]
    ratio = t[("restic", ph)][0] / t[("cairn", ph)][0]
    print(f"| {ph} | " + " | ".join(cells) + f" | {ratio:.2f}x faster |")
print()
for (tool, ph), v in sorted(t.items()):
    print(f"- {tool} {ph}: {v[3]}")
PY
