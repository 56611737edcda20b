#!/usr/bin/env bash
# A throwaway MariaDB primary with one GTID replica, for replica-routing tests and benchmarks.
# Its own datadirs, ports and sockets: the shared server on 3306 is never touched.
#
#   scripts/mariadb_replica.sh up DIR PRIMARY_PORT REPLICA_PORT
#       copy an initialised datadir into DIR/primary and DIR/replica, start the primary (binlog,
#       row format, server_id 1), create the users and database, start the replica (server_id 2,
#       read_only) replicating with MASTER_USE_GTID=slave_pos, and wait until it has caught up.
#   scripts/mariadb_replica.sh start|stop|kill primary|replica DIR
#       kill = SIGKILL: connections drop at once, as when a host dies.
#   scripts/mariadb_replica.sh status DIR   one line per node: running or stopped
#   scripts/mariadb_replica.sh down DIR     stop both and remove DIR
#
# Both servers listen on 127.0.0.1 only. URLs: mysql://paca:paca@127.0.0.1:PORT/paca_test;
# root has no password over the node's socket (DIR/NODE.sock), reachable only on this machine.
# Run as root (the servers run as the mysql user) or as a user that may run mariadbd.
set -euo pipefail

die() { printf 'mariadb_replica: ERROR: %s\n' "$*" >&2; exit 1; }

MARIADBD="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
[[ -x "$MARIADBD" ]] || die "mariadbd is not installed (scripts/backing_services.sh up)"
is_root() { [[ "$(id -u)" -eq 0 ]]; }

as_mysql() {
    if is_root; then
        (cd / && runuser -u mysql -- "$@")
    else
        "$@"
    fi
}

# The client as root over a node's own socket; never the shared server's defaults.
sql() {
    local dir="$1" which="$2"
    shift 2
    mariadb --no-defaults --protocol=socket -S "$dir/$which.sock" -uroot -N -B "$@"
}

port_of() { sed -n 's/^port *= *\([0-9]*\)$/\1/p' "$1/$2.cnf" | tail -n 1; }

# A dead server may stay a zombie for a while (its parent has exited; whoever inherits it reaps
# it in its own time): it holds no port, socket or file any more, so it counts as gone.
alive() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    stat="${stat// /}"
    [[ -n "$stat" && "$stat" != Z* ]]
}

running() {
    local dir="$1" which="$2"
    [[ -s "$dir/$which.pid" ]] || return 1
    alive "$(cat "$dir/$which.pid")"
}

wait_ready() {
    local dir="$1" which="$2"
    for _ in $(seq 1 300); do
        mariadb-admin --no-defaults --protocol=socket -S "$dir/$which.sock" -uroot \
            --connect-timeout=1 ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    tail -n 20 "$dir/$which.log" >&2 || true
    die "$which does not answer on $dir/$which.sock"
}

write_cnf() {
    local dir="$1" which="$2" port="$3" server_id="$4"
    cat >"$dir/$which.cnf" <<CNF
[mariadbd]
datadir = $dir/$which
port = $port
bind-address = 127.0.0.1
socket = $dir/$which.sock
pid-file = $dir/$which.pid
log-error = $dir/$which.log
server_id = $server_id
$(is_root && echo "user = mysql")
skip-name-resolve
performance_schema = OFF
max_connections = 60
innodb_buffer_pool_size = 32M
innodb_log_file_size = 16M
innodb_flush_log_at_trx_commit = 2
innodb_use_native_aio = 0
sync_binlog = 0
slave_net_timeout = 5
CNF
    if [[ "$which" == primary ]]; then
        printf 'log_bin = %s\nbinlog_format = ROW\n' "$dir/primary-bin" >>"$dir/$which.cnf"
    else
        printf 'read_only = 1\nrelay_log = %s\n' "$dir/replica-relay" >>"$dir/$which.cnf"
    fi
}

start_node() {
    local dir="$1" which="$2"
    running "$dir" "$which" && return 0
    # setsid + own log: the server outlives this script and holds none of its caller's pipes.
    setsid "$MARIADBD" --defaults-file="$dir/$which.cnf" </dev/null >>"$dir/$which.log" 2>&1 &
    wait_ready "$dir" "$which"
}

stop_node() {
    local dir="$1" which="$2" signal="$3" pid
    running "$dir" "$which" || return 0
    pid="$(cat "$dir/$which.pid")"
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        alive "$pid" || { rm -f "$dir/$which.pid"; return 0; }
        sleep 0.1
    done
    die "$which (pid $pid) still running after 30s"
}

up() {
    local dir="$1" primary_port="$2" replica_port="$3"
    mkdir -p "$(dirname "$dir")"
    if is_root && ! runuser -u mysql -- test -x "$(dirname "$dir")"; then
        # The mysql user cannot reach DIR (a checkout under /root): keep the servers in /tmp
        # and leave a link at DIR.
        local real
        real="$(mktemp -d /tmp/mariadb_replica.XXXXXX)"
        chmod 755 "$real"
        ln -sfn "$real" "$dir"
        dir="$real"
    fi
    mkdir -p "$dir"
    is_root && chown mysql: "$dir"
    # mariadb-install-db once per server version next to DIR, then copy: it takes seconds on a
    # busy machine, a copy a fraction of that.
    local template version
    version="$("$MARIADBD" --version | sed -n 's/.*Ver \([^ ]*\).*/\1/p')"
    template="$(dirname "$dir")/.install-db-$version"
    if [[ ! -d "$template/mysql" ]]; then
        rm -rf "$template.tmp"
        mkdir -p "$template.tmp"
        is_root && chown mysql: "$template.tmp"
        # Root with an empty password (normal authentication) over the node's own socket.
        as_mysql mariadb-install-db --no-defaults --datadir="$template.tmp" \
            --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve \
            >"$(dirname "$dir")/.install-db.log" 2>&1 ||
            die "mariadb-install-db failed: $(tail -n 20 "$(dirname "$dir")/.install-db.log")"
        mv -T "$template.tmp" "$template"
    fi
    as_mysql cp -a "$template" "$dir/primary"
    as_mysql cp -a "$template" "$dir/replica"
    write_cnf "$dir" primary "$primary_port" 1
    write_cnf "$dir" replica "$replica_port" 2
    start_node "$dir" primary
    # In the binlog from its start, so the replica creates the same users and database.
    sql "$dir" primary <<'SQL'
CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1';
CREATE USER 'paca'@'%' IDENTIFIED BY 'paca';
CREATE DATABASE paca_test;
GRANT ALL PRIVILEGES ON paca_test.* TO 'paca'@'%';
GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'paca'@'%';
SQL
    start_node "$dir" replica
    sql "$dir" replica <<SQL
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$primary_port, MASTER_USER='repl',
    MASTER_PASSWORD='repl', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1,
    MASTER_HEARTBEAT_PERIOD=1;
START SLAVE;
SQL
    local position caught
    position="$(sql "$dir" primary -e 'SELECT @@gtid_binlog_pos')"
    caught="$(sql "$dir" replica -e "SELECT MASTER_GTID_WAIT('$position', 30)")"
    [[ "$caught" == 0 ]] || die "the replica did not reach $position: $(sql "$dir" replica \
        -e 'SHOW SLAVE STATUS\G' | grep -E 'Running|Error' || true)"
}

node() {
    local action="$1" which="$2" dir="$3"
    [[ "$which" == primary || "$which" == replica ]] || die "primary or replica, not $which"
    [[ -f "$dir/$which.cnf" ]] || die "no $which in $dir"
    case "$action" in
        start) start_node "$dir" "$which" ;;
        stop) stop_node "$dir" "$which" TERM ;;
        kill) stop_node "$dir" "$which" KILL ;;
    esac
}

status() {
    local dir="$1" which
    for which in primary replica; do
        if running "$dir" "$which"; then
            echo "$which running port $(port_of "$dir" "$which") pid $(cat "$dir/$which.pid")"
        else
            echo "$which stopped"
        fi
    done
}

down() {
    local link="$1" dir which
    dir="$(abs_dir "$link")"
    [[ -d "$dir" ]] || { rm -f "$link"; return 0; }
    for which in replica primary; do
        [[ -f "$dir/$which.cnf" ]] && stop_node "$dir" "$which" KILL
    done
    rm -rf "$dir"
    [[ -L "$link" ]] && rm -f "$link"
    return 0
}

# Servers run from / as the mysql user: every directory must be absolute.
abs_dir() { realpath -m "$1"; }

case "${1:-}" in
    up) [[ $# -eq 4 ]] || die "up DIR PRIMARY_PORT REPLICA_PORT"; up "$(abs_dir "$2")" "$3" "$4" ;;
    start | stop | kill) [[ $# -eq 3 ]] || die "$1 primary|replica DIR"; node "$1" "$2" "$(abs_dir "$3")" ;;
    status) [[ $# -eq 2 ]] || die "status DIR"; status "$(abs_dir "$2")" ;;
    down) [[ $# -eq 2 ]] || die "down DIR"; down "$2" ;;
    *) die "usage: $0 up|start|stop|kill|status|down ..." ;;
esac
