#!/usr/bin/env bash
# Local infrastructure for SongSwipe without Docker: a real Apache Kafka
# broker (KRaft, one node, jars from Maven Central) and a PostgreSQL cluster
# of our own (Debian packages), both living under the git-ignored .local/.
#
#   scripts/infra.sh up       install what is missing, start both, migrate
#   scripts/infra.sh down     stop both; data is kept
#   scripts/infra.sh status   say what runs; exit 1 unless both do
#
# Kafka:    localhost:9092 (controller 127.0.0.1:9093), data .local/kafka/data
# Postgres: postgresql://songswipe:songswipe@127.0.0.1:54320/songswipe,
#           data .local/pg/data (owned by the postgres OS user)
# Logs:     .local/logs/kafka.log, .local/logs/postgres.log
#
# `rm -rf .local` (after `down`) starts everything from scratch.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL_DIR=$ROOT/.local
RUN_DIR=$LOCAL_DIR/run
LOG_DIR=$LOCAL_DIR/logs
LOCK_FILE=$RUN_DIR/infra.lock
LOCK_TIMEOUT_S=300

KAFKA_POM=$ROOT/infra/kafka/pom.xml
KAFKA_SERVER_PROPERTIES=$ROOT/infra/kafka/server.properties
KAFKA_LOG4J=$ROOT/infra/kafka/log4j2.properties
KAFKA_HOME=$LOCAL_DIR/kafka
KAFKA_LIB=$KAFKA_HOME/lib
KAFKA_DATA=$KAFKA_HOME/data
KAFKA_CONFIG=$KAFKA_HOME/server.properties
KAFKA_PID_FILE=$RUN_DIR/kafka.pid
KAFKA_LOG=$LOG_DIR/kafka.log
MAVEN_LOG=$LOG_DIR/maven.log
KAFKA_HOST=localhost
KAFKA_PORT=9092
KAFKA_CONTROLLER_PORT=9093
KAFKA_HEAP_OPTS=(-Xmx1g -Xms256m)
KAFKA_START_TIMEOUT_S=60
KAFKA_STOP_TIMEOUT_S=30

PG_DATA=$LOCAL_DIR/pg/data
PG_SOCKET_DIR=$RUN_DIR/postgres
PG_LOG=$LOG_DIR/postgres.log
PG_PORT=54320
PG_TIMEOUT_S=60
PG_APP_ROLE=songswipe
PG_APP_PASSWORD=songswipe
PG_APP_DATABASE=songswipe
# SUPERUSER because the Supabase bootstrap migration creates service_role
# with BYPASSRLS, which PostgreSQL 15 lets only a superuser grant.
PG_APP_ROLE_ATTRIBUTES="LOGIN SUPERUSER"
LOCAL_DATABASE_URL=postgresql://$PG_APP_ROLE:$PG_APP_PASSWORD@127.0.0.1:$PG_PORT/$PG_APP_DATABASE

APT_UPDATED=false

log() { printf 'infra: %s\n' "$*"; }
die() { printf 'infra: %s\n' "$*" >&2; exit 1; }

# Prints the last lines of a log and where to find the rest, then fails.
die_with_log() {
  local message=$1 log_file=$2
  printf 'infra: %s\n' "$message" >&2
  if [[ -f $log_file ]]; then
    printf -- '--- last lines of %s ---\n' "$log_file" >&2
    tail -n 40 "$log_file" >&2
    printf -- '--- end of %s ---\n' "$log_file" >&2
  fi
  die "full log: $log_file"
}

is_root() { [[ $EUID -eq 0 ]]; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Serialises concurrent up/down calls (several engineers, several `make test`).
# Every process started while holding the lock is started with fd 9 closed.
take_lock() {
  mkdir -p "$RUN_DIR"
  exec 9>"$LOCK_FILE"
  flock -w "$LOCK_TIMEOUT_S" 9 \
    || die "another scripts/infra.sh still holds $LOCK_FILE after ${LOCK_TIMEOUT_S} s"
}

# ---------------------------------------------------------------- tools

apt_install() {
  is_root || die "missing $*: install it (apt-get install $*) or run as root"
  if [[ $APT_UPDATED == false ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=true
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
}

ensure_java() {
  if ! command -v java >/dev/null; then
    if apt-cache show openjdk-17-jre-headless >/dev/null 2>&1; then
      apt_install openjdk-17-jre-headless
    else
      apt_install default-jre-headless
    fi
  fi

  local major
  major=$(java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p')
  [[ ${major:-0} -ge 17 ]] || die "Kafka 4 needs Java 17 or newer; 'java' is version ${major:-unknown}"
}

ensure_tools() {
  ensure_java
  command -v mvn >/dev/null || apt_install maven
  command -v python3 >/dev/null || apt_install python3
  pg_bin_dir >/dev/null || apt_install postgresql
  pg_bin_dir >/dev/null || die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin"
}

# ---------------------------------------------------------------- kafka

kafka_version() {
  sed -nE 's:.*<kafka.version>(.*)</kafka.version>.*:\1:p' "$KAFKA_POM"
}

kafka_java() {
  java -Dlog4j2.configurationFile="$KAFKA_LOG4J" -cp "$KAFKA_LIB/*" "$@"
}

# Copies Kafka's jars into .local/kafka/lib, again only when the pom changes.
kafka_install() {
  local stamp=$KAFKA_LIB/.pom.sha256 wanted
  wanted=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $stamp && $(<"$stamp") == "$wanted" ]]; then
    return
  fi

  log "downloading Kafka $(kafka_version) from Maven Central into $KAFKA_LIB"
  local staging=$KAFKA_HOME/lib.partial
  rm -rf "$staging"
  mvn -B --no-transfer-progress -f "$KAFKA_POM" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$staging" >"$MAVEN_LOG" 2>&1 \
    || die_with_log "mvn could not resolve $KAFKA_POM (Maven Central reachable?)" \
      "$MAVEN_LOG"
  echo "$wanted" >"$staging/.pom.sha256"
  rm -rf "$KAFKA_LIB"
  mv "$staging" "$KAFKA_LIB"
}

kafka_configure() {
  mkdir -p "$KAFKA_DATA"
  {
    cat "$KAFKA_SERVER_PROPERTIES"
    printf '\n# Added by scripts/infra.sh\nlog.dirs=%s\n' "$KAFKA_DATA"
  } >"$KAFKA_CONFIG"
}

kafka_format() {
  [[ -f $KAFKA_DATA/meta.properties ]] && return

  local cluster_id
  cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid | tail -n 1)
  log "formatting $KAFKA_DATA (KRaft, standalone controller, cluster id $cluster_id)"
  kafka_java kafka.tools.StorageTool format --standalone \
    --config "$KAFKA_CONFIG" --cluster-id "$cluster_id" >>"$KAFKA_LOG" 2>&1 \
    || die_with_log "formatting Kafka storage failed" "$KAFKA_LOG"
}

# Prints the broker's pid when the pid file names a live kafka.Kafka process.
kafka_pid() {
  [[ -f $KAFKA_PID_FILE ]] || return 1
  local pid
  pid=$(<"$KAFKA_PID_FILE")
  if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" \
      | grep -q ' kafka\.Kafka '; then
    echo "$pid"
    return 0
  fi
  rm -f "$KAFKA_PID_FILE"
  return 1
}

kafka_start() {
  local port
  for port in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    port_in_use "$port" \
      && die "port $port is taken by a process this script did not start; stop it first"
  done

  log "starting Kafka $(kafka_version) on $KAFKA_HOST:$KAFKA_PORT (log: $KAFKA_LOG)"
  printf '\n===== kafka start %s =====\n' "$(date -Is)" >>"$KAFKA_LOG"
  # setsid: the broker outlives this script and the caller's Ctrl-C.
  # The child shell writes its own pid, then becomes the JVM (exec).
  # shellcheck disable=SC2016
  setsid sh -c 'echo $$ >"$1"; shift; exec "$@"' sh "$KAFKA_PID_FILE" \
    java "${KAFKA_HEAP_OPTS[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_CONFIG" \
    </dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
}

# Succeeds once the broker answers a Metadata request listing itself.
kafka_answers() {
  python3 - "$KAFKA_HOST" "$KAFKA_PORT" <<'PY' 2>/dev/null
import socket
import struct
import sys

host, port = sys.argv[1], int(sys.argv[2])
client_id = b"infra.sh"
# Metadata v4 (the oldest Kafka 4 accepts): all topics, no auto-creation.
body = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
body += struct.pack(">ib", -1, 0)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


with socket.create_connection((host, port), timeout=3) as sock:
    sock.sendall(struct.pack(">i", len(body)) + body)
    read_exactly(sock, 4)  # the response size
    correlation_id, _throttle_ms, broker_count = struct.unpack(
        ">iii", read_exactly(sock, 12)
    )
sys.exit(0 if correlation_id == 7 and broker_count > 0 else 1)
PY
}

kafka_wait_ready() {
  local pid=$1 started_s=$SECONDS
  while ! kafka_answers; do
    kill -0 "$pid" 2>/dev/null \
      || die_with_log "Kafka exited while starting" "$KAFKA_LOG"
    (( SECONDS - started_s < KAFKA_START_TIMEOUT_S )) \
      || die_with_log "Kafka did not answer on $KAFKA_HOST:$KAFKA_PORT within ${KAFKA_START_TIMEOUT_S} s" "$KAFKA_LOG"
    sleep 0.5
  done
  log "kafka is up on $KAFKA_HOST:$KAFKA_PORT (pid $pid, $(( SECONDS - started_s )) s)"
}

# Starts the broker unless it runs; sets KAFKA_STARTING_PID when it started it.
KAFKA_STARTING_PID=
kafka_up() {
  local pid
  if pid=$(kafka_pid); then
    log "kafka already running on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
    return
  fi

  kafka_install
  kafka_configure
  kafka_format
  kafka_start

  local attempts=0
  until KAFKA_STARTING_PID=$(kafka_pid); do
    (( attempts++ < 50 )) || die_with_log "Kafka did not start" "$KAFKA_LOG"
    sleep 0.1
  done
}

kafka_down() {
  local pid
  if ! pid=$(kafka_pid); then
    log "kafka was not running"
    return
  fi

  log "stopping kafka (pid $pid, SIGTERM)"
  kill -TERM "$pid"
  local waited_s=0
  while kill -0 "$pid" 2>/dev/null && (( waited_s < KAFKA_STOP_TIMEOUT_S )); do
    sleep 1
    waited_s=$(( waited_s + 1 ))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "kafka still running after ${KAFKA_STOP_TIMEOUT_S} s, sending SIGKILL"
    kill -KILL "$pid"
  fi
  rm -f "$KAFKA_PID_FILE"
  log "kafka stopped"
}

kafka_status() {
  local pid
  if ! pid=$(kafka_pid); then
    log "kafka: stopped"
    return 1
  fi
  if kafka_answers; then
    log "kafka: running on $KAFKA_HOST:$KAFKA_PORT (pid $pid)"
  else
    log "kafka: process $pid is up but the broker does not answer (log: $KAFKA_LOG)"
    return 1
  fi
}

# ---------------------------------------------------------------- postgres

# The newest installed major version wins.
pg_bin_dir() {
  local dir
  dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  [[ -n $dir && -x $dir/initdb && -x $dir/postgres ]] || return 1
  echo "$dir"
}

# PostgreSQL refuses to run as root, so as root it runs as the postgres user.
as_postgres() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg() {
  local tool=$1
  shift
  # From / because the caller's working directory may be closed to postgres.
  (cd / && as_postgres "$(pg_bin_dir)/$tool" "$@" 9>&-)
}

# The postgres user must be able to reach .local/ through the repo's parents:
# add search (x) permission for others where it is missing, and say so.
pg_make_reachable() {
  is_root || return 0
  runuser -u postgres -- test -x "$LOCAL_DIR" && return

  local dir=$LOCAL_DIR
  while [[ $dir != / ]]; do
    if [[ $(stat -c %A "$dir") != *x ]] && [[ $(stat -c %A "$dir") != *t ]]; then
      log "chmod o+x $dir (so the postgres user can reach $PG_DATA)"
      chmod o+x "$dir"
    fi
    dir=$(dirname "$dir")
  done
}

pg_prepare_dirs() {
  mkdir -p "$LOCAL_DIR/pg" "$PG_SOCKET_DIR" "$LOG_DIR"
  touch "$PG_LOG"
  if is_root; then
    chown postgres: "$LOCAL_DIR/pg" "$PG_SOCKET_DIR" "$PG_LOG"
  fi
  pg_make_reachable
}

pg_init() {
  if [[ -f $PG_DATA/PG_VERSION ]]; then
    local data_major bin_major
    data_major=$(<"$PG_DATA/PG_VERSION")
    bin_major=$(basename "$(dirname "$(pg_bin_dir)")")
    [[ $data_major == "$bin_major" ]] \
      || die "$PG_DATA is PostgreSQL $data_major but $bin_major is installed; remove it to start afresh"
    return
  fi

  log "initialising a PostgreSQL cluster in $PG_DATA"
  pg initdb -D "$PG_DATA" -U postgres --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >>"$PG_LOG" 2>&1 \
    || die_with_log "initdb failed" "$PG_LOG"
  echo "include = 'songswipe.conf'" >>"$PG_DATA/postgresql.conf"
}

# Rewritten on every start, so moving the repo moves the socket too.
pg_configure() {
  cat >"$PG_DATA/songswipe.conf" <<EOF
# Written by scripts/infra.sh on every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
EOF
  if is_root; then
    chown postgres: "$PG_DATA/songswipe.conf"
  fi
}

pg_pid() {
  pg pg_ctl status -D "$PG_DATA" >/dev/null 2>&1 || return 1
  head -n 1 "$PG_DATA/postmaster.pid"
}

pg_start() {
  port_in_use "$PG_PORT" \
    && die "port $PG_PORT is taken by a process this script did not start; stop it first"

  log "starting PostgreSQL on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
  pg pg_ctl start -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_TIMEOUT_S" >/dev/null \
    || die_with_log "PostgreSQL did not start" "$PG_LOG"
}

# Creates the application's role and database; safe to repeat.
pg_bootstrap() {
  pg psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U postgres \
    -d postgres >/dev/null <<SQL
SELECT format('CREATE ROLE %I', '$PG_APP_ROLE')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP_ROLE')\gexec
ALTER ROLE $PG_APP_ROLE WITH $PG_APP_ROLE_ATTRIBUTES PASSWORD '$PG_APP_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_APP_DATABASE', '$PG_APP_ROLE')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_APP_DATABASE')\gexec
SQL
}

pg_up() {
  pg_prepare_dirs
  pg_init
  pg_configure

  local pid
  if pid=$(pg_pid); then
    log "postgres already running on 127.0.0.1:$PG_PORT (pid $pid)"
  else
    pg_start
    log "postgres is up on 127.0.0.1:$PG_PORT (pid $(pg_pid))"
  fi
  pg_bootstrap || die_with_log "creating role and database $PG_APP_DATABASE failed" "$PG_LOG"
}

pg_down() {
  local pid
  if [[ ! -f $PG_DATA/PG_VERSION ]] || ! pid=$(pg_pid); then
    log "postgres was not running"
    return
  fi

  log "stopping postgres (pid $pid, pg_ctl stop -m fast)"
  pg pg_ctl stop -D "$PG_DATA" -m fast -w -t "$PG_TIMEOUT_S" >/dev/null \
    || die_with_log "PostgreSQL did not stop" "$PG_LOG"
  log "postgres stopped"
}

pg_status() {
  local pid
  if [[ -f $PG_DATA/PG_VERSION ]] && pid=$(pg_pid); then
    log "postgres: running on 127.0.0.1:$PG_PORT (pid $pid)"
  else
    log "postgres: stopped"
    return 1
  fi
}

# ---------------------------------------------------------------- app

# The migration runner belongs to the Python code; run it once it exists.
run_migrations() {
  # `make up` installs the workspace first; a bare `infra.sh up` may run
  # before it, and then there is nothing to migrate with yet.
  if ! (cd "$ROOT" && python3 -m uv run --no-sync songswipe-migrate --help) \
      >/dev/null 2>&1; then
    log "the Python workspace is not installed yet: skipping migrations" \
      "(run make up)"
    return
  fi

  log "applying migrations: songswipe-migrate"
  (cd "$ROOT" && DATABASE_URL=$LOCAL_DATABASE_URL \
      python3 -m uv run --no-sync songswipe-migrate) \
    || die "migrations failed"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  take_lock
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  ensure_tools

  # Postgres is set up while the broker boots.
  kafka_up
  pg_up
  if [[ -n $KAFKA_STARTING_PID ]]; then
    kafka_wait_ready "$KAFKA_STARTING_PID"
  fi

  run_migrations
  log "ready: KAFKA_BOOTSTRAP_SERVERS=$KAFKA_HOST:$KAFKA_PORT DATABASE_URL=$LOCAL_DATABASE_URL"
}

cmd_down() {
  take_lock
  kafka_down
  pg_down
}

cmd_status() {
  local status=0
  kafka_status || status=1
  pg_status || status=1
  log "logs: $LOG_DIR"
  return "$status"
}

main() {
  case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
      echo "usage: $0 up|down|status" >&2
      exit 2
      ;;
  esac
}

main "$@"
