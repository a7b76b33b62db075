#!/usr/bin/env bash
# `cairn mount` against `cairn dump` (issue 16: "cp of a 1 GiB file out of the mount runs at
# least at half of cairn dump's speed; random 4 KiB reads at 1,000 offsets of a 1 GiB file
# return the right bytes").
#
# Usage: benches/mount.sh
# Environment:
#   SIZE_MIB=N   size of the file (default 1024)
#   CAIRN=PATH   a cairn binary to use instead of building the release one
#   WORK=DIR     scratch space (default: a new temporary directory, removed at exit)
#
# Needs /dev/fuse and fusermount3 (.ci/install-fuse.sh). Backs up one file of random bytes into
# a new local repository, then times (page cache dropped before each, where permitted):
# `cairn dump` of it to /dev/null; then, on a fresh mount, 4 KiB reads at 1,000 random offsets,
# each compared with the source (before anything is in the page cache), and `cp` of the whole
# file to /dev/null.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
if [ -z "${CAIRN:-}" ]; then
    cargo build --release --locked -q
    CAIRN=${CARGO_TARGET_DIR:-$PWD/target}/release/cairn
fi
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d /tmp/cairn-mount.XXXXXX)
    trap 'kill "${PID:-0}" 2>/dev/null || true; sleep 1; fusermount3 -u -z "$WORK/mnt" 2>/dev/null || true; rm -rf "$WORK"' EXIT
else
    mkdir -p "$WORK"
    trap 'kill "${PID:-0}" 2>/dev/null || true' EXIT
fi
export CAIRN_PASSWORD=bench CAIRN_CACHE_DIR="$WORK/cache" CAIRN_REPO="$WORK/repo"
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }

mkdir -p "$WORK/src" "$WORK/mnt"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/src/big"
"$CAIRN" init -q
"$CAIRN" backup -q "$WORK/src"
BYTES=$((SIZE_MIB << 20))

drop_caches
t0=$(now)
"$CAIRN" dump latest "$WORK/src/big" > /dev/null
t1=$(now)
dump_s=$(echo "$t1 - $t0" | bc -l)

"$CAIRN" mount -q "$WORK/mnt" & PID=$!
for _ in $(seq 600); do grep -q " $WORK/mnt " /proc/mounts && break; sleep 0.1; done
grep -q " $WORK/mnt " /proc/mounts || { echo "not mounted" >&2; exit 1; }
FILE="$WORK/mnt/snapshots/latest${WORK}/src/big"
# 1,000 random 4 KiB reads, each compared with the source.
python3 - "$FILE" "$WORK/src/big" <<'PY'
import os, random, sys, time
m, s = (os.open(p, os.O_RDONLY) for p in sys.argv[1:3])
size = os.fstat(s).st_size
rng = random.Random(16)
t = time.monotonic()
for _ in range(1000):
    off = rng.randrange(size)
    a, b = os.pread(m, 4096, off), os.pread(s, 4096, off)
    if a != b:
        sys.exit(f"random read at {off}: wrong bytes")
print(f"random reads: 1000 x 4 KiB right, {time.monotonic() - t:.2f} s")
PY
drop_caches
t0=$(now)
cp "$FILE" /dev/null
t1=$(now)
cp_s=$(echo "$t1 - $t0" | bc -l)

kill -TERM $PID; wait $PID; rc=$?
grep -q " $WORK/mnt " /proc/mounts && { echo "still mounted after SIGTERM" >&2; exit 1; }
echo "mount exit after SIGTERM: $rc"
mib=$SIZE_MIB
printf 'dump: %.2f s, %.0f MiB/s\n' "$dump_s" "$(echo "$mib / $dump_s" | bc -l)"
printf 'cp from mount: %.2f s, %.0f MiB/s (%.0f%% of dump)\n' "$cp_s" \
    "$(echo "$mib / $cp_s" | bc -l)" "$(echo "100 * $dump_s / $cp_s" | bc -l)"
: "$BYTES"
