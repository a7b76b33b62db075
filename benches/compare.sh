#!/usr/bin/env bash
# cairn beside restic (and borg, if asked) on the same data, in one run.
#
# Usage: benches/compare.sh [SOURCE_DIR...]
#   default sources: the Rust toolchains under ~/.rustup/toolchains (a few GB of real files)
# Environment:
#   WORK=DIR        scratch space (default /tmp/cairn-bench; needs ~4x the data size)
#   WITH_BORG=1     also run borg
#   WITH_S3=1       afterwards, run benches/s3.sh on the same sources (cairn and restic on a
#                   real S3 server: throughput and requests per GiB)
#   KEEP=1          keep the scratch directory
#   SETTLE=SECONDS  pause after copying the data, before the first phase (default 120)
#
# Phases, each timed with /usr/bin/time (wall seconds, peak RSS): first backup, unchanged
# re-backup, changed re-backup (after a deterministic churn of the data), full restore of the
# latest snapshot, `check --read-data` (MiB/s of repository read), and prune after forgetting
# the first two snapshots (MiB/s of repository before the prune). Page cache is dropped before each phase when permitted, so every tool starts
# cold. Prints a Markdown table; the repository sizes are `du -sb`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${WORK:-/tmp/cairn-bench}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need restic || [ ! -x /usr/bin/time ] || { [ "${WITH_BORG:-0}" = 1 ] && ! need borg; }; then
    echo "installing restic, time, borgbackup from the system packages" >&2
    apt-get install -y restic time borgbackup >/dev/null
fi

cargo build --release --locked -q
CAIRN=$ROOT/target/release/cairn

if [ $# -gt 0 ]; then SOURCES=("$@"); else
    SOURCES=()
    for d in "$HOME"/.rustup/toolchains/stable-* "$HOME"/.rustup/toolchains/nightly-*; do
        [ -d "$d" ] && SOURCES+=("$d")
    done
fi
[ ${#SOURCES[@]} -gt 0 ] || { echo "no source directories" >&2; exit 1; }

rm -rf "$WORK"; mkdir -p "$WORK"
DATA=$WORK/data
mkdir -p "$DATA"
for s in "${SOURCES[@]}"; do cp -a "$s" "$DATA/"; done
DATA_BYTES=$(du -sb "$DATA" | cut -f1)
DATA_FILES=$(find "$DATA" -type f | wc -l)
# The copy is GBs of writes that the disk (on a VM, the host's) keeps flushing for a while after
# `sync` returns: the first tool to run would pay for it (measured: a first backup 28 s right
# after the copy, 24 s 30 s later, same binary and data). 30 s was not always enough: three
# runs in a row gave cairn's first backup 26-28 s with a 30 s pause, 22.4 s with 120 s.
sync; sleep "${SETTLE:-120}"

export CAIRN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export CAIRN_CACHE_DIR=$WORK/cairn-cache RESTIC_CACHE_DIR=$WORK/restic-cache
export BORG_BASE_DIR=$WORK/borg-base BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

RESULTS=$WORK/results.tsv
: > "$RESULTS"
# run TOOL PHASE BYTES cmd...
run() {
    local tool=$1 phase=$2 bytes=$3; shift 3
    drop_caches
    local out=$WORK/time.$tool.$phase
    if ! /usr/bin/time -f "%e %M" -o "$out" "$@" > "$WORK/log.$tool.$phase" 2>&1; then
        echo "FAILED: $tool $phase (see $WORK/log.$tool.$phase)" >&2
        tail -5 "$WORK/log.$tool.$phase" >&2
        exit 1
    fi
    read -r secs rss < <(tail -1 "$out")
    printf '%s\t%s\t%s\t%s\t%s\n' "$tool" "$phase" "$secs" "$rss" "$bytes" >> "$RESULTS"
    printf '%-7s %-10s %8ss %8s MiB RSS\n' "$tool" "$phase" "$secs" "$((rss / 1024))" >&2
}

# Deterministic churn: append to every 50th file, rewrite the middle of every 200th file larger
# than 1 MiB, delete every 300th file, add 64 MiB of new files.
churn() {
    python3 - "$DATA" <<'PY'
import os, sys, random
root = sys.argv[1]
rng = random.Random(42)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
               if os.path.isfile(os.path.join(d, f)) and not os.path.islink(os.path.join(d, f)))
for i, p in enumerate(files):
    try:
        if i % 300 == 299:
            os.remove(p)
        elif i % 50 == 0:
            with open(p, "ab") as f:
                f.write(b"churned line %d\n" % i)
        elif i % 200 == 7 and os.path.getsize(p) > (1 << 20):
            with open(p, "r+b") as f:
                f.seek(os.path.getsize(p) // 2)
                f.write(rng.randbytes(4096))
    except OSError:
        pass
new = os.path.join(root, "new-files")
os.makedirs(new, exist_ok=True)
for i in range(64):
    with open(os.path.join(new, "f%02d" % i), "wb") as f:
        f.write(rng.randbytes(1 << 20))
PY
}

CHANGED_BYTES=0
for phase in first unchanged changed; do
    if [ "$phase" = changed ]; then churn; fi
    bytes=$(du -sb "$DATA" | cut -f1)
    if [ "$phase" = first ]; then
        $CAIRN -q -r "$WORK/cairn-repo" init >/dev/null
        restic -q -r "$WORK/restic-repo" init >/dev/null
        [ "${WITH_BORG:-0}" = 1 ] && borg init -e repokey-blake2 "$WORK/borg-repo" >/dev/null 2>&1
    fi
    run cairn "$phase" "$bytes" "$CAIRN" -q -r "$WORK/cairn-repo" backup "$DATA"
    run restic "$phase" "$bytes" restic -q -r "$WORK/restic-repo" backup "$DATA"
    if [ "${WITH_BORG:-0}" = 1 ]; then
        run borg "$phase" "$bytes" borg create --compression zstd,3 "$WORK/borg-repo::$phase" "$DATA"
    fi
    for t in cairn restic ${WITH_BORG:+borg}; do
        [ -d "$WORK/$t-repo" ] && printf '%s\t%s-size\t%s\n' "$t" "$phase" "$(du -sb "$WORK/$t-repo" | cut -f1)" >> "$RESULTS"
    done
done
RESTORE_BYTES=$(du -sb "$DATA" | cut -f1)
run cairn restore "$RESTORE_BYTES" "$CAIRN" -q -r "$WORK/cairn-repo" restore latest --target "$WORK/restore-cairn"
run restic restore "$RESTORE_BYTES" restic -q -r "$WORK/restic-repo" restore latest --target "$WORK/restore-restic"
if [ "${WITH_BORG:-0}" = 1 ]; then
    mkdir -p "$WORK/restore-borg"
    run borg restore "$RESTORE_BYTES" sh -c "cd '$WORK/restore-borg' && borg extract '$WORK/borg-repo::changed'"
fi
# Verification of everything stored: read and verify every blob.
run cairn check-read-data "$(du -sb "$WORK/cairn-repo" | cut -f1)" "$CAIRN" -q -r "$WORK/cairn-repo" check --read-data
run restic check-read-data "$(du -sb "$WORK/restic-repo" | cut -f1)" restic -q -r "$WORK/restic-repo" check --read-data
if [ "${WITH_BORG:-0}" = 1 ]; then
    run borg check-read-data "$(du -sb "$WORK/borg-repo" | cut -f1)" borg check --verify-data "$WORK/borg-repo"
fi
# Prune: forget the first two snapshots (the changed one keeps most of their data), then prune;
# cairn with --grace 0s so its space comes back in the same run, as restic's does.
ids() { python3 -c 'import json,sys; s=sorted(json.load(sys.stdin), key=lambda x: x["time"]); print(" ".join(x["id"] for x in s[:2]))'; }
# shellcheck disable=SC2046
$CAIRN -q -r "$WORK/cairn-repo" forget $($CAIRN -r "$WORK/cairn-repo" snapshots --json | ids)
# shellcheck disable=SC2046
restic -q -r "$WORK/restic-repo" forget $(restic -r "$WORK/restic-repo" snapshots --json | ids)
run cairn prune "$(du -sb "$WORK/cairn-repo" | cut -f1)" "$CAIRN" -q -r "$WORK/cairn-repo" prune --grace 0s
run restic prune "$(du -sb "$WORK/restic-repo" | cut -f1)" restic -q -r "$WORK/restic-repo" prune
for t in cairn restic; do
    printf '%s\t%s\t%s\n' "$t" "prune-size" "$(du -sb "$WORK/$t-repo" | cut -f1)" >> "$RESULTS"
done
# Sanity: cairn's restore must equal the data.
diff -r "$DATA" "$WORK/restore-cairn$DATA" >/dev/null || { echo "cairn restore differs from the data!" >&2; exit 1; }

python3 - "$RESULTS" "$DATA_BYTES" "$DATA_FILES" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
data_bytes, data_files = int(sys.argv[2]), int(sys.argv[3])
t = collections.defaultdict(dict)
for r in rows:
    if r[1].endswith("-size"):
        t[r[0]][r[1]] = int(r[2])
    else:
        t[r[0]][r[1]] = (float(r[2]), int(r[3]), int(r[4]))
tools = [x for x in ("cairn", "restic", "borg") if x in t]
print(f"Data: {data_bytes/2**30:.2f} GiB in {data_files} files\n")
print("| phase | " + " | ".join(f"{x} time | {x} MiB/s | {x} peak RSS" for x in tools) + " | cairn vs restic |")
print("|---|" + "---|---|---|" * len(tools) + "---|")
for ph in ("first", "unchanged", "changed", "restore", "check-read-data", "prune"):
    cells = []
    if any(ph not in t[x] for x in tools):
        continue
    for x in tools:
        s, rss, b = t[x][ph]
        cells += [f"{s:.1f} s", f"{b/2**20/s:.0f}" if s > 0 else "-", f"{rss/1024:.0f} MiB"]
    c, r = t["cairn"][ph][0], t["restic"][ph][0]
    ratio = f"{r/c:.2f}x faster" if c > 0 else "-"
    print(f"| {ph} | " + " | ".join(cells) + f" | {ratio} |")
print()
print("| repository size after | " + " | ".join(tools) + " |")
print("|---|" + "---|" * len(tools))
for ph in ("first", "unchanged", "changed", "prune"):
    print(f"| {ph} | " + " | ".join(f"{t[x][ph+'-size']/2**20:.1f} MiB" if ph+'-size' in t[x] else "-" for x in tools) + " |")
PY
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
if [ "${WITH_S3:-0}" = 1 ]; then
    WORK=$WORK-s3 "$ROOT/benches/s3.sh" "${SOURCES[@]}"
fi
