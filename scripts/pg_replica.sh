#!/usr/bin/env bash
# A throwaway PostgreSQL primary with one streaming replica, for failover tests and benchmarks.
# Its own clusters, ports and data directory: the shared cluster on 5432 is never touched.
#
#   scripts/pg_replica.sh up DIR PRIMARY_PORT REPLICA_PORT
#       initdb a primary in DIR/primary, pg_basebackup a replica into DIR/replica (with a
#       replication slot, so WAL is kept while the replica is down), start both.
#   scripts/pg_replica.sh start|stop|kill primary|replica DIR
#       kill = immediate shutdown: connections drop at once, as when a host dies.
#   scripts/pg_replica.sh promote DIR       the replica becomes a primary (pg_ctl promote)
#   scripts/pg_replica.sh sync on|off DIR   synchronous replication to the replica (a commit
#       waits for the replica's flush), as a cluster manager sets it while a standby is healthy
#   scripts/pg_replica.sh down DIR          stop both and remove DIR
#
# Both clusters listen on 127.0.0.1 only and trust local connections from the `postgres`
# user (no secret to keep); URLs: postgresql://postgres@127.0.0.1:PORT/postgres.
# Run as root (the servers run as the postgres user) or as a user that may run postgres.
set -euo pipefail

die() { printf 'pg_replica: ERROR: %s\n' "$*" >&2; exit 1; }

bin_dir() {
    local dir
    dir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -V | tail -n 1)"
    [[ -n "$dir" && -x "$dir/pg_ctl" ]] || die "no PostgreSQL under /usr/lib/postgresql"
    echo "$dir"
}
BIN="$(bin_dir)"

as_pg() {
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_ctl() { as_pg "$BIN/pg_ctl" "$@"; }

port_of() { sed -n 's/^port = \([0-9]*\)$/\1/p' "$1/postgresql.auto.conf" | tail -n 1; }

wait_ready() {
    local port="$1"
    for _ in $(seq 1 100); do
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && return 0
        sleep 0.1
    done
    die "nothing answers on $port"
}

up() {
    local dir="$1" primary_port="$2" replica_port="$3"
    mkdir -p "$(dirname "$dir")"
    if [[ "$(id -u)" -eq 0 ]] && ! runuser -u postgres -- test -x "$(dirname "$dir")"; then
        # The postgres user cannot reach DIR (a checkout under /root): keep the clusters in
        # /tmp and leave a link at DIR.
        local real
        real="$(mktemp -d /tmp/pg_replica.XXXXXX)"
        chmod 755 "$real"
        ln -sfn "$real" "$dir"
        dir="$real"
    fi
    mkdir -p "$dir"
    [[ "$(id -u)" -eq 0 ]] && chown postgres: "$dir"
    # initdb once per PostgreSQL version next to DIR, then copy: initdb takes seconds on a busy
    # machine, a copy a fraction of that.
    local template
    template="$(dirname "$dir")/.initdb-$(basename "$(dirname "$BIN")")"
    if [[ ! -f "$template/PG_VERSION" ]]; then
        rm -rf "$template.tmp"
        mkdir -p "$template.tmp"
        [[ "$(id -u)" -eq 0 ]] && chown postgres: "$template.tmp"
        as_pg "$BIN/initdb" -D "$template.tmp" -U postgres --auth=trust -E UTF8 --no-sync \
            >/dev/null
        mv -T "$template.tmp" "$template"
    fi
    as_pg cp -a "$template" "$dir/primary"
    cat >>"$dir/primary/postgresql.auto.conf" <<CONF
port = $primary_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
hot_standby = on
wal_sender_timeout = 5s
wal_receiver_status_interval = 1s
shared_buffers = 32MB
max_connections = 60
CONF
    pg_ctl -D "$dir/primary" -l "$dir/primary.log" -w -t 30 start >/dev/null
    wait_ready "$primary_port"
    as_pg "$BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres -D "$dir/replica" \
        -R -C -S replica1 -X stream -c fast --no-sync
    echo "port = $replica_port" >>"$dir/replica/postgresql.auto.conf"
    pg_ctl -D "$dir/replica" -l "$dir/replica.log" -w -t 30 start >/dev/null
    wait_ready "$replica_port"
}

node() {
    local action="$1" which="$2" dir="$3"
    [[ "$which" == primary || "$which" == replica ]] || die "primary or replica, not $which"
    case "$action" in
        start)
            # Already running: nothing to do (tests restore a pair this way after a failure).
            pg_ctl -D "$dir/$which" status >/dev/null 2>&1 && return 0
            pg_ctl -D "$dir/$which" -l "$dir/$which.log" -w -t 30 start >/dev/null
            wait_ready "$(port_of "$dir/$which")"
            ;;
        stop) pg_ctl -D "$dir/$which" -m fast -w stop >/dev/null ;;
        kill) pg_ctl -D "$dir/$which" -m immediate -w stop >/dev/null ;;
    esac
}

sync() {
    local mode="$1" dir="$2" names
    case "$mode" in on) names="'*'" ;; off) names="''" ;; *) die "sync on|off" ;; esac
    as_pg "$BIN/psql" -X -q -h 127.0.0.1 -p "$(port_of "$dir/primary")" -U postgres -d postgres \
        -c "ALTER SYSTEM SET synchronous_standby_names = $names" -c "SELECT pg_reload_conf()" \
        >/dev/null
}

down() {
    local link="$1" dir which
    dir="$(abs_dir "$link")"
    [[ -d "$dir" ]] || { rm -f "$link"; return 0; }
    for which in replica primary; do
        if [[ -f "$dir/$which/postmaster.pid" ]]; then
            pg_ctl -D "$dir/$which" -m immediate -w stop >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$dir"
    [[ -L "$link" ]] && rm -f "$link"
    return 0
}

# Commands run from / as the postgres user: every directory must be absolute.
abs_dir() { realpath -m "$1"; }

case "${1:-}" in
    up) [[ $# -eq 4 ]] || die "up DIR PRIMARY_PORT REPLICA_PORT"; up "$(abs_dir "$2")" "$3" "$4" ;;
    start | stop | kill) [[ $# -eq 3 ]] || die "$1 primary|replica DIR"; node "$1" "$2" "$(abs_dir "$3")" ;;
    promote) [[ $# -eq 2 ]] || die "promote DIR"; pg_ctl -D "$(abs_dir "$2")/replica" -w promote >/dev/null ;;
    sync) [[ $# -eq 3 ]] || die "sync on|off DIR"; sync "$2" "$(abs_dir "$3")" ;;
    down) [[ $# -eq 2 ]] || die "down DIR"; down "$2" ;;
    *) die "usage: $0 up|start|stop|kill|promote|sync|down ..." ;;
esac
