#!/usr/bin/env bash
# What `cairn daemon` costs between runs (issue 15: "the daemon idles at under 30 MiB RSS and no
# measurable CPU between runs, measured over 10 minutes").
#
# Usage: benches/daemon_idle.sh
# Environment:
#   SECONDS_IDLE=N  how long to watch (default 600)
#   CAIRN=PATH      a cairn binary to use instead of building the release one
#   WORK=DIR        scratch space (default: a new temporary directory, removed at exit)
#
# Makes a small local repository and a cairn.toml with one job on the default schedules (job
# daily at 02:00 UTC, health Sundays at 01:00, cleanup on the 1st at 03:00, so nothing fires
# while watched unless the watch spans one of those moments) and the listener on a free
# 127.0.0.1 port; runs the job once so the history and status page have a run; starts the
# daemon, waits 10 s for it to settle, fetches /metrics and / once (so their code is loaded),
# then reads its RSS (VmRSS, VmHWM) and CPU time (utime+stime clock ticks from /proc/PID/stat)
# at the start and the end of the watch. Prints one line per reading and the differences.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${SECONDS_IDLE:-600}
if [ -z "${CAIRN:-}" ]; then
    cargo build --release --locked -q
    CAIRN=$PWD/target/release/cairn
fi
if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d /tmp/cairn-idle.XXXXXX)
    trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
else
    mkdir -p "$WORK"
    trap 'kill "${PID:-0}" 2>/dev/null || true' EXIT
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/src"
head -c 2000000 /dev/urandom > "$WORK/src/data.bin"
echo "idle-bench-password" > "$WORK/pw"
chmod 600 "$WORK/pw"
cat > "$WORK/cairn.toml" <<TOML
[settings]
state-dir = "$WORK/state"
cache-dir = "$WORK/cache"

[daemon]
listen = "127.0.0.1:$PORT"

[repositories.local]
url = "$WORK/repo"
password-file = "$WORK/pw"

[sources.files]
kind = "files"
paths = ["$WORK/src"]

[jobs.nightly]
sources = ["files"]
repository = "local"
check = "structure"
TOML
C=("$CAIRN" --config "$WORK/cairn.toml")
"${C[@]}" -r local init >/dev/null
"${C[@]}" run >/dev/null
"${C[@]}" daemon 2>"$WORK/daemon.log" &
PID=$!
sleep 10
curl -sf "http://127.0.0.1:$PORT/metrics" >/dev/null
curl -sf "http://127.0.0.1:$PORT/" >/dev/null
read_proc() {
    local rss hwm ticks
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised name): utime, stime.
    ticks=$(sed 's/^.*) //' "/proc/$PID/stat" | awk '{print $12 + $13}')
    echo "$rss $hwm $ticks"
}
read -r rss0 hwm0 t0 < <(read_proc)
echo "start: VmRSS ${rss0} KiB, VmHWM ${hwm0} KiB, CPU ${t0} ticks"
sleep "$IDLE"
read -r rss1 hwm1 t1 < <(read_proc)
echo "end after ${IDLE} s: VmRSS ${rss1} KiB, VmHWM ${hwm1} KiB, CPU ${t1} ticks"
echo "idle: RSS $((rss1 / 1024)) MiB (peak $((hwm1 / 1024)) MiB), CPU $((t1 - t0)) ticks of $(getconf CLK_TCK)/s over ${IDLE} s"
