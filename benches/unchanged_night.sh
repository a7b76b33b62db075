#!/usr/bin/env bash
# What an unchanged night costs when something reads the tree between backups (issue 18: "An
# unchanged re-backup of the Linux source tree, after setting every directory's atime two days
# back, adds under 64 KiB").
#
# Usage: benches/unchanged_night.sh [CAIRN_BINARY]
#   CAIRN_BINARY defaults to target/release/cairn (built with `cargo build --release` if missing).
# Environment: WORK=DIR scratch space on a real file system with relatime (default
#   /var/tmp/cairn-unchanged-night; about 2 GiB), KEEP=1 keeps it.
#
# Extracts Debian's linux-source-6.1 (installed with apt when missing), sets every directory's
# access time two days back (so relatime updates it on the next read), then for the default and
# for --with-atime: a first backup into a fresh local repository, `ls -R` and `grep -r` over the
# whole tree (a web server or an indexer reading it), and a second backup. Prints a Markdown
# table of the second backup's trees, data blobs and stored bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CAIRN=${1:-$ROOT/target/release/cairn}
WORK=${WORK:-/var/tmp/cairn-unchanged-night}
TARBALL=/usr/src/linux-source-6.1.tar.xz

[ -f "$TARBALL" ] || apt-get install -y linux-source-6.1 >/dev/null
[ -x "$CAIRN" ] || cargo build --release
rm -rf "$WORK" && mkdir -p "$WORK/src"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT
tar -xJf "$TARBALL" -C "$WORK/src"
export CAIRN_PASSWORD=bench

field() { python3 -c "import sys,json; s=json.load(sys.stdin)['summary']; print(s['$1'])"; }

echo "| run | files | dirs | 2nd backup: trees added | data blobs added | stored bytes added | seconds |"
echo "|---|---|---|---|---|---|---|"
for flags in "" "--with-atime"; do
    repo="$WORK/repo$flags"
    "$CAIRN" -r "$repo" init >/dev/null
    find "$WORK/src" -type d -exec touch -a -d '2 days ago' {} +
    "$CAIRN" -r "$repo" --json backup $flags "$WORK/src" >/dev/null
    ls -R "$WORK/src" >/dev/null
    grep -r -l cairn-no-such-string "$WORK/src" >/dev/null || true
    out=$("$CAIRN" -r "$repo" --json backup $flags "$WORK/src")
    s=$(echo "$out" | python3 -c "
import sys, json
v = json.load(sys.stdin); s = v['summary']
print('|', '${flags:-default}', '|', s['total_files'], '|', s['dirs'], '|', s['tree_blobs_added'], '|',
      s['data_blobs_added'], '|', s['stored_bytes_added'], '|', round(v['seconds'], 2), '|')")
    echo "$s"
done
