#!/usr/bin/env bash
# `cairn find` over many snapshots of a big tree (issue 16: "find over 30 snapshots of the Linux
# source tree (80k files each) answers in under 1 s once indexed; report the catalog growth per
# snapshot").
#
# Usage: benches/find.sh
# Environment:
#   FILES=N       files in the generated tree (default 80000, the Linux tree's count)
#   SNAPSHOTS=N   snapshots to take (default 30)
#   CAIRN=PATH    a cairn binary to use instead of building the release one
#   WORK=DIR      scratch space (default: a new temporary directory, removed at exit)
#
# There is no Linux checkout on the bench machine and no network, so the tree is generated with
# the Linux tree's shape: FILES small files (sizes 100 B .. 12 KiB) spread over ~5,000 directories
# up to six levels deep, named like the kernel's (drivers/net/ethernet/..., *.c, *.h, Makefile,
# Kconfig). Between snapshots 1% of the files are rewritten, 60 are added and 60 removed, and a
# directory is renamed every fifth night. After every backup the catalog's size (the SQLite file,
# after a checkpoint) and the file index's share of it are read with sqlite3.
#
# Then, with every snapshot indexed (backups index their snapshot when they commit), each search
# runs 3 times and the best and worst wall time are printed, with the number of matches:
#   a single name that exists in every snapshot, a name that never exists, a name glob that
#   matches ~1/3 of the files (about 800,000 matches over 30 snapshots, JSON to /dev/null), a path
#   glob under one subsystem, and the single name restricted to --host and --path.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-80000}
SNAPSHOTS=${SNAPSHOTS:-30}
if [ -z "${CAIRN:-}" ]; then
    cargo build --release --locked -q
    CAIRN=$PWD/target/release/cairn
fi
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d /tmp/cairn-find.XXXXXX)
    trap 'rm -rf "$WORK"' EXIT
else
    mkdir -p "$WORK"
fi
export CAIRN_REPO=$WORK/repo CAIRN_PASSWORD=find-bench-password CAIRN_CACHE_DIR=$WORK/cache
SRC=$WORK/linux

python3 - "$SRC" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(2291)
top = ["arch", "drivers", "fs", "include", "kernel", "net", "sound", "tools", "lib", "mm",
       "security", "crypto", "block", "Documentation", "scripts", "samples", "virt"]
words = ["net", "ethernet", "usb", "gpu", "drm", "core", "host", "phy", "media", "platform",
         "i2c", "spi", "pci", "scsi", "block", "char", "input", "iio", "hwmon", "clk", "mfd",
         "power", "thermal", "tty", "serial", "staging", "video", "sound", "soc", "codecs",
         "intel", "amd", "arm", "mips", "x86", "riscv", "boot", "dts", "mach", "kvm", "bpf"]
# Every top-level directory, then subdirectories under a parent picked at random.
dirs = list(top)
seen = set(dirs)
while len(dirs) < max(len(top), n // 16):
    parent = rng.choice(dirs)
    if parent.count("/") >= 5:
        continue
    d = f"{parent}/{rng.choice(words)}{rng.randrange(40)}"
    if d not in seen:
        seen.add(d)
        dirs.append(d)
dirs.sort()
for i in range(n):
    d = rng.choice(dirs)
    r = rng.random()
    if r < 0.03:
        name = "Makefile"
    elif r < 0.05:
        name = "Kconfig"
    elif r < 0.35:
        name = f"{rng.choice(words)}_{i}.h"
    else:
        name = f"{rng.choice(words)}_{i}.c"
    path = os.path.join(root, d, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(rng.randbytes(rng.randrange(100, 12288)))
# A name present in every snapshot (never churned).
os.makedirs(os.path.join(root, "drivers"), exist_ok=True)
with open(os.path.join(root, "drivers", "invoice-2291.c"), "wb") as f:
    f.write(b"/* the needle */\n")
PY

churn() {
    python3 - "$SRC" "$1" <<'PY'
import os, random, sys
root, night = sys.argv[1], int(sys.argv[2])
rng = random.Random(night)
files = []
for d, _, names in os.walk(root):
    for n in names:
        files.append(os.path.join(d, n))
files.sort()
files = [f for f in files if not f.endswith("invoice-2291.c")]
for f in rng.sample(files, len(files) // 100):
    with open(f, "ab") as fh:
        fh.write(rng.randbytes(64))
for f in rng.sample(files, 60):
    if os.path.exists(f):
        os.remove(f)
dirs = sorted({os.path.dirname(f) for f in files})
for i in range(60):
    with open(os.path.join(rng.choice(dirs), f"new_{night}_{i}.c"), "wb") as fh:
        fh.write(rng.randbytes(rng.randrange(100, 12288)))
if night % 5 == 0:
    d = rng.choice([d for d in dirs if d.count("/") > root.count("/") + 2 and os.path.isdir(d)])
    os.rename(d, d + f"_r{night}")
PY
}

"$CAIRN" init >/dev/null
echo "tree: $(find "$SRC" -type f | wc -l) files, $(find "$SRC" -type d | wc -l) directories, $(du -sh "$SRC" | cut -f1)"
catalog() { find "$WORK/cache" -name catalog.sqlite | head -1; }
prev=0
for night in $(seq 1 "$SNAPSHOTS"); do
    [ "$night" -gt 1 ] && churn "$night"
    start=$(date +%s.%N)
    "$CAIRN" backup "$SRC" --host bench --tag nightly >/dev/null
    took=$(echo "$(date +%s.%N) - $start" | bc)
    cat=$(catalog)
    sqlite3 "$cat" 'PRAGMA wal_checkpoint(TRUNCATE);' >/dev/null
    size=$(stat -c %s "$cat")
    read -r idx entries <<<"$(sqlite3 -separator ' ' "$cat" 'SELECT COALESCE(SUM(LENGTH(sealed)),0), COALESCE(SUM(entries),0) FROM file_index;')"
    printf 'snapshot %2d: backup %5.1f s, catalog %6.1f MiB (+%5.0f KiB), file index %5.1f MiB for %d entries (%.1f B/entry)\n' \
        "$night" "$took" "$(echo "$size/1048576" | bc -l)" "$(echo "($size-$prev)/1024" | bc -l)" \
        "$(echo "$idx/1048576" | bc -l)" "$entries" "$(echo "$idx/$entries" | bc -l)"
    prev=$size
done

search() {
    local label=$1
    shift
    local best=999 worst=0 n=0
    for _ in 1 2 3; do
        start=$(date +%s.%N)
        "$CAIRN" --json find "$@" >"$WORK/out.json"
        t=$(echo "$(date +%s.%N) - $start" | bc)
        best=$(echo "if ($t < $best) $t else $best" | bc)
        worst=$(echo "if ($t > $worst) $t else $worst" | bc)
    done
    read -r n searched indexed <<<"$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d["matches"]), d["snapshots_searched"], d["snapshots_indexed"])' "$WORK/out.json")"
    printf '%-44s %8d matches in %2d snapshots (indexed now: %d)  best %.3f s  worst %.3f s\n' \
        "$label" "$n" "$searched" "$indexed" "$best" "$worst"
}
search "find invoice-2291.c" invoice-2291.c
search "find no-such-file.txt" no-such-file.txt
search "find '*.h'" '*.h'
search "find 'drivers/**/usb*/*.c'" 'drivers/**/usb*/*.c'
search "find invoice-2291.c --host bench --path SRC" invoice-2291.c --host bench --path "$SRC"
