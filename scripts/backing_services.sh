#!/usr/bin/env bash
# Backing services for the test suite: PostgreSQL, MariaDB, Redis and a
# MongoDB-protocol server (FerretDB; when it cannot be built, the in-memory
# mongo-java-server from Maven Central), all on 127.0.0.1.
#
#   scripts/backing_services.sh up      install what is missing, start what is
#                                       not running, write var/backing/env
#   scripts/backing_services.sh down    stop what `up` started
#   scripts/backing_services.sh status  show which servers answer
#
# Environment:
#   PACA_TEST_POSTGRES_URL, PACA_TEST_MYSQL_URL, PACA_TEST_REDIS_URL,
#   PACA_TEST_MONGODB_URL  when set, that server is taken as given: it is
#                          neither installed nor started, and the URL is
#                          written to the env file as is.
#   MONGODB_URL            use this MongoDB server instead of FerretDB.
#   PACA_BACKING=compose   use `docker compose` instead of local packages
#                          (needs a reachable Docker engine).
#   PACA_BACKING_WAIT      seconds to wait for each server (default 60).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="$ROOT/var/backing"
STARTED_FILE="$STATE_DIR/started"
ENV_FILE="$STATE_DIR/env"
LOG_DIR="$STATE_DIR/log"
FERRET_DIR="$STATE_DIR/ferretdb"
FERRET_PID="$FERRET_DIR/ferretdb.pid"
FERRETDB_MODULE="github.com/FerretDB/FerretDB/cmd/ferretdb"
FERRETDB_VERSION="v1.24.1"
MJS_SRC="$ROOT/scripts/mongo-java-server"
MJS_DIR="$STATE_DIR/mongo-java-server"
MJS_PID="$MJS_DIR/server.pid"
WAIT_SECONDS="${PACA_BACKING_WAIT:-60}"

PG_PORT=5432
MYSQL_PORT=3306
REDIS_PORT=6379
MONGO_PORT=27017
MYSQL_PID_FILE=/run/mysqld/mysqld.pid

DEFAULT_POSTGRES_URL="postgresql://paca:paca@127.0.0.1:$PG_PORT/paca_test"
DEFAULT_MYSQL_URL="mysql://paca:paca@127.0.0.1:$MYSQL_PORT/paca_test"
DEFAULT_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
DEFAULT_MONGODB_URL="mongodb://127.0.0.1:$MONGO_PORT/"

ENGINES=(postgres mariadb redis mongodb)

# Go is often installed outside the default PATH.
for dir in /usr/local/go/bin "$HOME/go/bin"; do
    case ":$PATH:" in
        *":$dir:"*) ;;
        *) [[ -d "$dir" ]] && PATH="$PATH:$dir" ;;
    esac
done
export PATH

log() { printf 'backing: %s\n' "$*" >&2; }
die() { printf 'backing: ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

engine_port() {
    case "$1" in
        postgres) echo "$PG_PORT" ;;
        mariadb) echo "$MYSQL_PORT" ;;
        redis) echo "$REDIS_PORT" ;;
        mongodb) echo "$MONGO_PORT" ;;
    esac
}

# Name of the PACA_TEST_* variable for an engine.
engine_var() {
    case "$1" in
        postgres) echo PACA_TEST_POSTGRES_URL ;;
        mariadb) echo PACA_TEST_MYSQL_URL ;;
        redis) echo PACA_TEST_REDIS_URL ;;
        mongodb) echo PACA_TEST_MONGODB_URL ;;
    esac
}

# Set by the user for this engine (an external server we leave alone)?
engine_external() {
    local var
    var="$(engine_var "$1")"
    [[ -n "${!var:-}" ]] && return 0
    [[ "$1" == mongodb && -n "${MONGODB_URL:-}" ]]
}

run_as_postgres() { (cd / && runuser -u postgres -- "$@"); }

record_started() {
    mkdir -p "$STATE_DIR"
    touch "$STARTED_FILE"
    grep -qxF "$1" "$STARTED_FILE" || echo "$1" >>"$STARTED_FILE"
}

# wait_for ENGINE LOGFILE PID COMMAND...: retry COMMAND for up to
# WAIT_SECONDS; give up early if PID (may be empty) has exited.
wait_for() {
    local engine="$1" logfile="$2" pid="$3"
    shift 3
    local deadline=$((SECONDS + WAIT_SECONDS)) reason=""
    until "$@" >/dev/null 2>&1; do
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            reason="$engine exited during startup"
        elif ((SECONDS >= deadline)); then
            reason="$engine did not become ready within ${WAIT_SECONDS}s"
        fi
        if [[ -n "$reason" ]]; then
            log "$reason"
            if [[ -n "$logfile" && -r "$logfile" ]]; then
                log "last lines of $logfile:"
                tail -n 30 "$logfile" >&2 || true
            fi
            die "$engine is not available"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- installing

APT_UPDATED=0
POLICY_RC_CREATED=0

cleanup_policy_rc() {
    if ((POLICY_RC_CREATED)); then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=0
    fi
}

apt_fail() {
    tail -n 30 "$LOG_DIR/apt.log" >&2 || true
    die "$1 failed (full output in ${LOG_DIR#"$ROOT"/}/apt.log)"
}

apt_install() {
    mkdir -p "$LOG_DIR"
    ((APT_UPDATED)) || {
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -o DPkg::Lock::Timeout=300 \
            >"$LOG_DIR/apt.log" 2>&1 || apt_fail "apt-get update"
        APT_UPDATED=1
    }
    # Without an init system, maintainer scripts must not try to start
    # the services they install.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
        trap cleanup_policy_rc EXIT
    fi
    log "apt-get install $* (a few minutes)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "$@" >>"$LOG_DIR/apt.log" 2>&1 ||
        { cleanup_policy_rc; apt_fail "apt-get install $*"; }
    cleanup_policy_rc
}

pg_server_installed() {
    command -v pg_ctlcluster >/dev/null 2>&1 &&
        compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}
mariadb_server_installed() {
    command -v mariadbd >/dev/null 2>&1 || [[ -x /usr/sbin/mariadbd ]]
}
redis_server_installed() { command -v redis-server >/dev/null 2>&1; }

# Debian packages needed for the engines in "$@" (those we must start).
missing_packages() {
    local engine
    for engine in "$@"; do
        case "$engine" in
            postgres) pg_server_installed || echo postgresql ;;
            mariadb)
                mariadb_server_installed || echo mariadb-server
                command -v mariadb-admin >/dev/null 2>&1 || echo mariadb-client
                ;;
            redis) redis_server_installed || echo redis-server ;;
            # Not an engine: the fallback MongoDB-protocol server's toolchain.
            mongo-java-server)
                command -v javac >/dev/null 2>&1 || echo default-jdk-headless
                command -v mvn >/dev/null 2>&1 || echo maven
                ;;
            # Not an engine: the headless browser the status-page test drives.
            browser) command -v chromium >/dev/null 2>&1 || echo chromium ;;
            # Not an engine: the pooler bench/db_query.py runs itself, on its own port.
            pgbouncer) [[ -x /usr/sbin/pgbouncer ]] || echo pgbouncer ;;
        esac
    done
}

ensure_packages() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages "$@" | sort -u)
    ((${#pkgs[@]} == 0)) && return 0
    if ! is_root; then
        die "missing Debian packages: ${pkgs[*]}. Install them with:
    sudo apt-get install --no-install-recommends ${pkgs[*]}
or point the tests at your own servers with the PACA_TEST_* variables (see DEVELOPERS.md)."
    fi
    apt_install "${pkgs[@]}"
}

ferretdb_bin() {
    local candidate
    for candidate in "$(command -v ferretdb 2>/dev/null || true)" \
        "$HOME/go/bin/ferretdb" /usr/local/bin/ferretdb; do
        [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; return 0; }
    done
    return 1
}

# Builds FerretDB with the Go toolchain; prints the binary path. Returns
# non-zero (with a message) when it cannot be built.
install_ferretdb() {
    local bin
    if bin="$(ferretdb_bin)"; then
        echo "$bin"
        return 0
    fi
    if ! command -v go >/dev/null 2>&1; then
        log "FerretDB needs the Go toolchain (1.22 or newer) to build: install Go, or set MONGODB_URL"
        return 1
    fi
    local gobin="$HOME/go/bin"
    mkdir -p "$gobin" "$LOG_DIR"
    log "building FerretDB $FERRETDB_VERSION with go install (a few minutes the first time)"
    if ! GOBIN="$gobin" timeout 1800 go install "$FERRETDB_MODULE@$FERRETDB_VERSION" \
        >"$LOG_DIR/ferretdb-install.log" 2>&1; then
        log "go install $FERRETDB_MODULE@$FERRETDB_VERSION failed:"
        tail -n 5 "$LOG_DIR/ferretdb-install.log" >&2 || true
        return 1
    fi
    echo "$gobin/ferretdb"
}

# Resolves mongo-java-server from Maven Central and compiles its launcher
# into $MJS_DIR (once; again when the pom or the source changes). Returns
# non-zero (with a message) when it cannot be built.
build_mongo_java_server() {
    local -a pkgs
    mapfile -t pkgs < <(missing_packages mongo-java-server)
    if ((${#pkgs[@]} > 0)); then
        if ! is_root; then
            log "mongo-java-server needs ${pkgs[*]} (sudo apt-get install --no-install-recommends ${pkgs[*]})"
            return 1
        fi
        # A subshell, so that a failed install falls through to the warning.
        (apt_install "${pkgs[@]}") || return 1
    fi
    mkdir -p "$MJS_DIR/classes" "$LOG_DIR"
    if [[ ! -s "$MJS_DIR/classpath" || "$MJS_SRC/pom.xml" -nt "$MJS_DIR/classpath" ]]; then
        log "mongodb: resolving mongo-java-server with Maven"
        if ! mvn -B -q -Dstyle.color=never -f "$MJS_SRC/pom.xml" dependency:build-classpath \
            -Dmdep.outputFile="$MJS_DIR/classpath" </dev/null >"$LOG_DIR/mongo-java-server-build.log" 2>&1; then
            log "mvn dependency:build-classpath failed:"
            tail -n 5 "$LOG_DIR/mongo-java-server-build.log" >&2 || true
            rm -f "$MJS_DIR/classpath"
            return 1
        fi
    fi
    if [[ ! -f "$MJS_DIR/classes/MongoJavaServer.class" ||
        "$MJS_SRC/MongoJavaServer.java" -nt "$MJS_DIR/classes/MongoJavaServer.class" ||
        "$MJS_DIR/classpath" -nt "$MJS_DIR/classes/MongoJavaServer.class" ]]; then
        if ! javac -d "$MJS_DIR/classes" -cp "$(cat "$MJS_DIR/classpath")" \
            "$MJS_SRC/MongoJavaServer.java" >>"$LOG_DIR/mongo-java-server-build.log" 2>&1; then
            log "javac MongoJavaServer.java failed:"
            tail -n 5 "$LOG_DIR/mongo-java-server-build.log" >&2 || true
            return 1
        fi
    fi
}

# ---------------------------------------------------------------- PostgreSQL

pg_version() {
    local v
    v="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null |
        grep -E '^[0-9]+$' | sort -n | tail -n 1 || true)"
    if [[ -z "$v" ]]; then
        v="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null |
            grep -E '^[0-9]+$' | sort -n | tail -n 1 || true)"
    fi
    [[ -n "$v" ]] || return 1
    echo "$v"
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; }

pg_provision() {
    run_as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paca') THEN
        CREATE ROLE paca LOGIN SUPERUSER REPLICATION PASSWORD 'paca';
    ELSE
        ALTER ROLE paca LOGIN SUPERUSER REPLICATION PASSWORD 'paca';
    END IF;
END
$$;
SELECT 'CREATE DATABASE paca_test OWNER paca'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'paca_test')\gexec
SQL
}

pg_paca_ok() {
    command -v psql >/dev/null 2>&1 &&
        PGCONNECT_TIMEOUT=3 psql -X -qAt "$DEFAULT_POSTGRES_URL" -c 'select 1' >/dev/null 2>&1
}

# Creates the role and database on a server that already runs, when we can
# reach it as the local postgres superuser.
pg_ensure_provisioned() {
    pg_paca_ok && return 0
    if is_root && id postgres >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 &&
        pg_provision 2>/dev/null; then
        log "postgres: created role and database paca_test"
        return 0
    fi
    log "WARNING: postgres answers on $PG_PORT but paca/paca_test is not usable and could not be created"
}

postgres_up() {
    local ver logfile
    ver="$(pg_version)" || die "postgres: no PostgreSQL version found under /usr/lib/postgresql"
    is_root || die "postgres: starting the cluster needs root (or start it yourself and rerun)"
    if [[ ! -d "/etc/postgresql/$ver/main" ]]; then
        log "postgres: creating cluster $ver/main"
        pg_createcluster "$ver" main --port "$PG_PORT" >&2
    fi
    logfile="/var/log/postgresql/postgresql-$ver-main.log"
    log "postgres: starting cluster $ver/main"
    pg_ctlcluster "$ver" main start >&2 || {
        [[ -r "$logfile" ]] && tail -n 30 "$logfile" >&2
        die "postgres: pg_ctlcluster $ver main start failed"
    }
    record_started postgres
    wait_for postgres "$logfile" "" pg_ready
    pg_provision || die "postgres: could not create role paca / database paca_test"
}

postgres_down() {
    local ver
    ver="$(pg_version)" || return 0
    if pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
        log "postgres: stopping cluster $ver/main"
        pg_ctlcluster "$ver" main stop >&2 || log "WARNING: postgres: stop failed"
    fi
}

# ---------------------------------------------------------------- MariaDB

mariadb_ready() { mariadb-admin --protocol=socket -uroot --connect-timeout=2 ping; }

mariadb_provision() {
    mariadb --protocol=socket -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS paca_test;
CREATE USER IF NOT EXISTS 'paca'@'127.0.0.1' IDENTIFIED BY 'paca';
CREATE USER IF NOT EXISTS 'paca'@'localhost' IDENTIFIED BY 'paca';
ALTER USER 'paca'@'127.0.0.1' IDENTIFIED BY 'paca';
ALTER USER 'paca'@'localhost' IDENTIFIED BY 'paca';
GRANT ALL PRIVILEGES ON *.* TO 'paca'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'paca'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
}

mariadb_paca_ok() {
    command -v mariadb >/dev/null 2>&1 &&
        mariadb --connect-timeout=3 -h127.0.0.1 -P"$MYSQL_PORT" -upaca -ppaca paca_test \
            -e 'select 1' >/dev/null 2>&1
}

mariadb_ensure_provisioned() {
    mariadb_paca_ok && return 0
    if is_root && command -v mariadb >/dev/null 2>&1 && mariadb_provision 2>/dev/null; then
        log "mariadb: created user paca and database paca_test"
        return 0
    fi
    log "WARNING: mariadb answers on $MYSQL_PORT but paca/paca_test is not usable and could not be created"
}

mariadb_up() {
    local logfile="$LOG_DIR/mariadb.log" mariadbd_bin
    is_root || die "mariadb: starting mariadbd needs root (or start it yourself and rerun)"
    mariadbd_bin="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
    mkdir -p /run/mysqld "$LOG_DIR"
    chown mysql:mysql /run/mysqld
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "mariadb: initialising /var/lib/mysql"
        mkdir -p /var/lib/mysql
        chown mysql:mysql /var/lib/mysql
        mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
            --auth-root-authentication-method=socket >"$LOG_DIR/mariadb-install.log" 2>&1 || {
            tail -n 30 "$LOG_DIR/mariadb-install.log" >&2
            die "mariadb: mariadb-install-db failed"
        }
    fi
    log "mariadb: starting mariadbd"
    # Errors go to stderr (Debian's config sets no log_error), kept in our log.
    setsid "$mariadbd_bin" --user=mysql --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
        --pid-file="$MYSQL_PID_FILE" </dev/null >>"$logfile" 2>&1 &
    record_started mariadb
    wait_for mariadb "$logfile" "$!" mariadb_ready
    mariadb_provision || die "mariadb: could not create user paca / database paca_test"
}

mariadb_down() {
    local pid="" i
    [[ -r "$MYSQL_PID_FILE" ]] && pid="$(cat "$MYSQL_PID_FILE")"
    log "mariadb: stopping"
    if ! mariadb-admin --protocol=socket -uroot --connect-timeout=2 shutdown >/dev/null 2>&1; then
        if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
    fi
    if [[ -n "$pid" ]]; then
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || return 0
            sleep 0.5
        done
        log "WARNING: mariadb (pid $pid) still running after 30s"
    fi
}

# ---------------------------------------------------------------- Redis

redis_ready() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

redis_up() {
    local logfile="$LOG_DIR/redis.log"
    mkdir -p "$LOG_DIR" "$STATE_DIR/redis"
    log "redis: starting redis-server"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no --dir "$STATE_DIR/redis" \
        --pidfile "$STATE_DIR/redis/redis.pid" --logfile "$logfile" >/dev/null
    record_started redis
    wait_for redis "$logfile" "" redis_ready
}

redis_down() {
    log "redis: stopping"
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------- FerretDB

mongodb_ready() { port_open "$MONGO_PORT"; }

# Starts FerretDB, or mongo-java-server when FerretDB cannot be built.
# Returns 2 when neither can be installed here (the caller skips MongoDB).
mongodb_up() {
    local bin logfile="$LOG_DIR/ferretdb.log"
    if ! bin="$(install_ferretdb)"; then
        log "mongodb: falling back to mongo-java-server (in memory)"
        mongo_java_server_up
        return
    fi
    mkdir -p "$FERRET_DIR/data" "$FERRET_DIR/state" "$LOG_DIR"
    log "mongodb: starting FerretDB ($bin)"
    setsid "$bin" \
        --handler=sqlite \
        --sqlite-url="file:$FERRET_DIR/data/" \
        --state-dir="$FERRET_DIR/state" \
        --listen-addr="127.0.0.1:$MONGO_PORT" \
        --telemetry=disable \
        </dev/null >>"$logfile" 2>&1 &
    echo "$!" >"$FERRET_PID"
    record_started mongodb
    wait_for mongodb "$logfile" "$(cat "$FERRET_PID")" mongodb_ready
}

# Returns 2 when it cannot be built here; dies when it builds but does not start.
mongo_java_server_up() {
    local logfile="$LOG_DIR/mongo-java-server.log"
    build_mongo_java_server || return 2
    log "mongodb: starting mongo-java-server"
    # Warnings only: at INFO it logs every connection.
    setsid java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
        -cp "$MJS_DIR/classes:$(cat "$MJS_DIR/classpath")" \
        MongoJavaServer 127.0.0.1 "$MONGO_PORT" \
        </dev/null >>"$logfile" 2>&1 &
    echo "$!" >"$MJS_PID"
    record_started mongodb
    wait_for mongodb "$logfile" "$(cat "$MJS_PID")" mongodb_ready
}

# stop_pidfile NAME PIDFILE: TERM, up to 10 s to exit, then KILL.
stop_pidfile() {
    local name="$1" pidfile="$2" pid i
    [[ -r "$pidfile" ]] || return 0
    pid="$(cat "$pidfile")"
    log "mongodb: stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
    for ((i = 0; i < 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

mongodb_down() {
    stop_pidfile FerretDB "$FERRET_PID"
    stop_pidfile mongo-java-server "$MJS_PID"
}

# ---------------------------------------------------------------- env file

write_env() {
    # $1: "skip-mongodb" when no MongoDB-protocol server is available.
    local tmp mongo_url="${PACA_TEST_MONGODB_URL:-${MONGODB_URL:-$DEFAULT_MONGODB_URL}}"
    mkdir -p "$STATE_DIR"
    tmp="$(mktemp "$STATE_DIR/env.XXXXXX")"
    {
        echo "# Written by scripts/backing_services.sh up; read by the test suite."
        printf 'export PACA_TEST_POSTGRES_URL=%q\n' "${PACA_TEST_POSTGRES_URL:-$DEFAULT_POSTGRES_URL}"
        printf 'export PACA_TEST_MYSQL_URL=%q\n' "${PACA_TEST_MYSQL_URL:-$DEFAULT_MYSQL_URL}"
        printf 'export PACA_TEST_REDIS_URL=%q\n' "${PACA_TEST_REDIS_URL:-$DEFAULT_REDIS_URL}"
        if [[ "${1:-}" == skip-mongodb ]]; then
            echo "# PACA_TEST_MONGODB_URL not set: no MongoDB-protocol server could be provided"
        else
            printf 'export PACA_TEST_MONGODB_URL=%q\n' "$mongo_url"
        fi
    } >"$tmp"
    mv "$tmp" "$ENV_FILE"
}

# ---------------------------------------------------------------- commands

compose_up() {
    docker info >/dev/null 2>&1 || die "PACA_BACKING=compose but no Docker engine is reachable (docker info failed)"
    log "docker compose up -d postgres mariadb redis mongodb"
    (cd "$ROOT" && docker compose up -d --wait postgres mariadb redis mongodb) >&2
    record_started compose
    local engine
    for engine in "${ENGINES[@]}"; do
        port_open "$(engine_port "$engine")" || die "$engine (compose) does not answer on port $(engine_port "$engine")"
    done
    write_env
}

cmd_up() {
    mkdir -p "$STATE_DIR" "$LOG_DIR"
    if [[ -n "${PACA_TEST_POSTGRES_URL:-}" && -n "${PACA_TEST_MYSQL_URL:-}" &&
        -n "${PACA_TEST_REDIS_URL:-}" && -n "${PACA_TEST_MONGODB_URL:-}" ]]; then
        log "all PACA_TEST_* variables are set: using those servers, starting nothing"
        write_env
        return 0
    fi
    if [[ "${PACA_BACKING:-local}" == compose ]]; then
        compose_up
        return 0
    fi

    local engine
    local -a to_start=()
    for engine in "${ENGINES[@]}"; do
        if engine_external "$engine"; then
            log "$engine: using the server given in the environment"
        elif port_open "$(engine_port "$engine")"; then
            : # already running: reused, not ours to stop
        else
            to_start+=("$engine")
        fi
    done

    ensure_packages "${to_start[@]}" browser pgbouncer

    local skip_mongodb=""
    for engine in "${to_start[@]}"; do
        if [[ "$engine" == mongodb ]]; then
            local rc=0
            mongodb_up || rc=$?
            if ((rc == 2)); then
                log "WARNING: mongodb: neither FerretDB nor mongo-java-server is available; MongoDB tests will have no server." \
                    "Set MONGODB_URL (or PACA_TEST_MONGODB_URL) to use an existing one."
                skip_mongodb=skip-mongodb
            elif ((rc != 0)); then
                exit "$rc"
            fi
        else
            "${engine}_up"
        fi
    done

    # Servers that were already running still need the test role/user.
    engine_external postgres || pg_ensure_provisioned
    engine_external mariadb || mariadb_ensure_provisioned

    write_env "$skip_mongodb"
    log "ready; environment in ${ENV_FILE#"$ROOT"/}"
}

cmd_down() {
    [[ -r "$STARTED_FILE" ]] || { log "nothing to stop"; return 0; }
    local engine
    while IFS= read -r engine; do
        case "$engine" in
            postgres) postgres_down ;;
            mariadb) mariadb_down ;;
            redis) redis_down ;;
            mongodb) mongodb_down ;;
            compose) (cd "$ROOT" && docker compose stop postgres mariadb redis mongodb) >&2 || true ;;
            "") ;;
            *) log "WARNING: unknown entry '$engine' in ${STARTED_FILE#"$ROOT"/}" ;;
        esac
    done <"$STARTED_FILE"
    rm -f "$STARTED_FILE"
}

cmd_status() {
    local engine state all_up=0 var
    for engine in "${ENGINES[@]}"; do
        var="$(engine_var "$engine")"
        if engine_external "$engine"; then
            printf '%-9s external (%s)\n' "$engine" "${!var:-${MONGODB_URL:-}}"
            continue
        fi
        if port_open "$(engine_port "$engine")"; then
            state="up (127.0.0.1:$(engine_port "$engine"))"
        else
            state="down"
            all_up=1
        fi
        if [[ -r "$STARTED_FILE" ]] && grep -qxF "$engine" "$STARTED_FILE"; then
            state="$state, started by backing_services.sh"
        fi
        printf '%-9s %s\n' "$engine" "$state"
    done
    return "$all_up"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 2
        ;;
esac
