#!/usr/bin/env bash
# Prune at scale, cairn beside restic on the same contents, in one run.
#
# Usage: benches/prune.sh [FILES]
#   FILES (default 1000000): small files of 1 KiB of random bytes, half in a/ and half in b/;
#   each file is one blob in both tools, so the repositories hold about FILES data blobs.
# Environment: WORK=DIR scratch space (default /tmp/cairn-prune-bench), KEEP=1 keep it.
#
# Steps per tool: back up a/ (snapshot 1) and b/ (snapshot 2), forget snapshot 1, then prune
# (cairn: --grace 0s, so the space comes back in the same run as restic's). Prints a Markdown
# table of prune wall time, peak RSS and repository size before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-1000000}
WORK=${WORK:-/tmp/cairn-prune-bench}
command -v restic >/dev/null && [ -x /usr/bin/time ] || apt-get install -y restic time >/dev/null
cargo build --release --locked -q
CAIRN=$ROOT/target/release/cairn
rm -rf "$WORK"; mkdir -p "$WORK"
python3 - "$WORK/data" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for half in ("a", "b"):
    for d in range(1000):
        os.makedirs(os.path.join(root, half, "%03d" % d), exist_ok=True)
for i in range(n):
    half = "a" if i < n // 2 else "b"
    with open(os.path.join(root, half, "%03d" % (i % 1000), "f%07d" % i), "wb") as f:
        f.write(os.urandom(1024))
PY
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export CAIRN_CACHE_DIR=$WORK/cairn-cache RESTIC_CACHE_DIR=$WORK/restic-cache
T=$WORK/table.tsv; : > "$T"
measure() { # name cmd...
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$WORK/time.$name" "$@" > "$WORK/log.$name" 2>&1 \
        || { echo "FAILED: $name" >&2; tail "$WORK/log.$name" >&2; exit 1; }
    read -r s m < <(tail -1 "$WORK/time.$name")
    echo "$name $s $m" | tee -a "$T" >&2
}
$CAIRN -q -r "$WORK/cairn-repo" init
restic -q -r "$WORK/restic-repo" init
measure cairn-backup-a "$CAIRN" -q -r "$WORK/cairn-repo" backup "$WORK/data/a"
measure cairn-backup-b "$CAIRN" -q -r "$WORK/cairn-repo" backup "$WORK/data/b"
measure restic-backup-a restic -q -r "$WORK/restic-repo" backup "$WORK/data/a"
measure restic-backup-b restic -q -r "$WORK/restic-repo" backup "$WORK/data/b"
cb=$(du -sb "$WORK/cairn-repo" | cut -f1); rb=$(du -sb "$WORK/restic-repo" | cut -f1)
cid=$($CAIRN -r "$WORK/cairn-repo" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
rid=$(restic -r "$WORK/restic-repo" snapshots --json | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sorted(s, key=lambda x: x["time"])[0]["id"])')
$CAIRN -q -r "$WORK/cairn-repo" forget "$cid"
restic -q -r "$WORK/restic-repo" forget "$rid"
measure cairn-prune "$CAIRN" -q -r "$WORK/cairn-repo" prune --grace 0s
measure restic-prune restic -q -r "$WORK/restic-repo" prune
ca=$(du -sb "$WORK/cairn-repo" | cut -f1); ra=$(du -sb "$WORK/restic-repo" | cut -f1)
measure cairn-check "$CAIRN" -q -r "$WORK/cairn-repo" check
python3 - "$T" "$N" "$cb" "$ca" "$rb" "$ra" <<'PY'
import sys
rows = {l.split()[0]: (float(l.split()[1]), int(l.split()[2])) for l in open(sys.argv[1])}
n, cb, ca, rb, ra = map(int, sys.argv[2:])
print(f"{n} files of 1 KiB (about {n} data blobs); prune after forgetting the snapshot of half of them\n")
print("| | cairn | restic |\n|---|---|---|")
for what in ("backup-a", "backup-b", "prune"):
    c, r = rows["cairn-" + what], rows["restic-" + what]
    print(f"| {what} time | {c[0]:.1f} s | {r[0]:.1f} s |")
    print(f"| {what} peak RSS | {c[1]/1024:.0f} MiB | {r[1]/1024:.0f} MiB |")
print(f"| repository before prune | {cb/2**20:.0f} MiB | {rb/2**20:.0f} MiB |")
print(f"| repository after prune | {ca/2**20:.0f} MiB | {ra/2**20:.0f} MiB |")
PY
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
