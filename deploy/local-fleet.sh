#!/usr/bin/env bash
# A shoal fleet on this one machine: a 3-node NATS cluster with JetStream
# (the real nats-server, built from the module version go.mod requires) and
# 3 shoal hosts, each `shoal serve --nats <the cluster>` with its own
# address, all sharing one token key. It is the fleet of a production
# deployment, with loopback addresses standing in for machines.
#
#   deploy/local-fleet.sh up       start whatever is not running
#   deploy/local-fleet.sh status   every host, its workers and their connections; the cluster's health
#   deploy/local-fleet.sh down     stop everything; nothing is left running
#
# Settings (environment):
#   FLEET_DIR          state: configs, data, logs, pid files (default ${TMPDIR:-/tmp}/shoal-fleet-$UID)
#   FLEET_HOSTS        the hosts' addresses (default "127.0.0.11 127.0.0.12 127.0.0.13")
#   FLEET_PORT         the gateway port on every host address (default 8080)
#   FLEET_ADMIN_PORT   the admin endpoint's port on every host address (default 8081)
#   FLEET_WORKERS      workers per host (default 2)
#   FLEET_CHAT_HOSTS   the hosts (1-based) that run chat service instances (default "1 2");
#                      the others route /ws/chat to them over the bus
#   FLEET_NATS_PORT    first NATS client port on 127.0.0.1; node i uses it + i - 1 (default 4222)
#   FLEET_ROUTE_PORT   first NATS cluster port (default 6222)
#   FLEET_MONITOR_PORT first NATS monitoring port (default 8222)
#   SHOAL_BIN          the shoal binary (default: built from this checkout into FLEET_DIR/bin)
#   NATS_BIN           the nats-server binary (default: built into FLEET_CACHE)
#   FLEET_CACHE        where the nats-server build is kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/shoal)
#   FLEET_EXTRA_ARGS   more flags for every `shoal serve`
#
# Needs go (to build) and curl; status needs jq too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FLEET_DIR=${FLEET_DIR:-${TMPDIR:-/tmp}/shoal-fleet-$(id -u)}
read -r -a HOSTS <<<"${FLEET_HOSTS:-127.0.0.11 127.0.0.12 127.0.0.13}"
PORT=${FLEET_PORT:-8080}
ADMIN_PORT=${FLEET_ADMIN_PORT:-8081}
WORKERS=${FLEET_WORKERS:-2}
read -r -a CHAT_HOSTS <<<"${FLEET_CHAT_HOSTS-1 2}"
NATS_PORT=${FLEET_NATS_PORT:-4222}
ROUTE_PORT=${FLEET_ROUTE_PORT:-6222}
MONITOR_PORT=${FLEET_MONITOR_PORT:-8222}
FLEET_CACHE=${FLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}
read -r -a EXTRA <<<"${FLEET_EXTRA_ARGS:-}"
NODES=3
CLUSTER=shoal-fleet

say() { printf '%s\n' "$*"; }
die() { printf 'local-fleet: %s\n' "$*" >&2; exit 1; }

pidfile() { printf '%s/run/%s.pid' "$FLEET_DIR" "$1"; }

# alive PID: the process exists and is not a zombie waiting to be reaped
# (a process whose starter exited is reaped by init, in its own time).
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	[[ -r /proc/$1/stat ]] || return 0
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	[[ ${stat##*) } != Z* ]]
}

# running NAME: the process of a pid file is alive.
running() {
	local f
	f=$(pidfile "$1")
	[[ -f $f ]] && alive "$(cat "$f")"
}

# launch NAME LOG CMD...: start CMD in a session of its own (so that its
# whole process group can be stopped, and a terminal's ^C does not reach
# it), recording its pid.
launch() {
	local name=$1 log=$2
	shift 2
	setsid "$@" >"$log" 2>&1 </dev/null &
	echo $! >"$(pidfile "$name")"
}

# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds.
wait_for() {
	local what=$1 limit=$2
	shift 2
	local deadline=$((SECONDS + limit))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what not ready within ${limit}s (logs in $FLEET_DIR/log)"
		sleep 0.2
	done
}

nats_url() { printf 'nats://127.0.0.1:%d' $((NATS_PORT + $1 - 1)); }
monitor() { printf 'http://127.0.0.1:%d' $((MONITOR_PORT + $1 - 1)); }

cluster_urls() {
	local i urls=()
	for ((i = 1; i <= NODES; i++)); do urls+=("$(nats_url "$i")"); done
	local IFS=,
	printf '%s' "${urls[*]}"
}

build() {
	mkdir -p "$FLEET_DIR"/{bin,run,log} "$FLEET_CACHE"
	if [[ -z ${NATS_BIN:-} ]]; then
		local v
		v=$(cd "$ROOT" && go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
		NATS_BIN=$FLEET_CACHE/nats-server-$v
		if [[ ! -x $NATS_BIN ]]; then
			say "building nats-server $v"
			(cd "$ROOT" && go build -o "$NATS_BIN.tmp" github.com/nats-io/nats-server/v2) && mv "$NATS_BIN.tmp" "$NATS_BIN"
		fi
	fi
	if [[ -z ${SHOAL_BIN:-} ]]; then
		SHOAL_BIN=$FLEET_DIR/bin/shoal
		say "building shoal"
		(cd "$ROOT" && go build -o "$SHOAL_BIN.tmp" ./cmd/shoal) && mv "$SHOAL_BIN.tmp" "$SHOAL_BIN"
	fi
}

# nats_conf I: node I's configuration. Every node lists every route, so
# the JetStream meta group knows its size from the start.
nats_conf() {
	local i=$1 j routes=""
	for ((j = 1; j <= NODES; j++)); do
		routes+="    nats-route://127.0.0.1:$((ROUTE_PORT + j - 1))"$'\n'
	done
	cat <<EOF
server_name: n$i
listen: 127.0.0.1:$((NATS_PORT + i - 1))
http: 127.0.0.1:$((MONITOR_PORT + i - 1))
# shoal's workers carry messages up to their --max-message (1 MiB) plus headers.
max_payload: 8MB
jetstream {
  store_dir: "$FLEET_DIR/nats/n$i"
  max_file_store: 1GB
  max_memory_store: 256MB
}
cluster {
  name: $CLUSTER
  listen: 127.0.0.1:$((ROUTE_PORT + i - 1))
  routes: [
$routes  ]
}
EOF
}

nats_healthy() { curl -fsS "$(monitor "$1")/healthz?js-enabled-only=true" | grep -q '"ok"'; }

# meta_ready: the first node sees a JetStream meta leader and a meta
# group of every node.
meta_ready() {
	local js
	js=$(curl -fsS "$(monitor 1)/jsz" | tr -d ' \n')
	[[ $js == *'"leader":"'[^\"]* && $js == *"\"cluster_size\":$NODES"[,\}]* ]]
}

host_services() {
	local h=$1 c
	for c in "${CHAT_HOSTS[@]}"; do
		[[ $c == "$h" ]] && { printf 'echo,chat'; return; }
	done
	# fanout, the bench's room service, keeps its rooms in memory and so
	# runs as one instance: it is not part of a fleet.
	printf 'echo'
}

host_routes() {
	if ((${#CHAT_HOSTS[@]} > 0)) && [[ $(host_services "$1") != *chat* ]]; then printf 'chat'; fi
}

serving() { grep -q '"msg":"shoal serving"' "$FLEET_DIR/log/host$1.log"; }

up() {
	command -v go >/dev/null || die "go is needed to build nats-server and shoal"
	build
	if [[ ! -f $FLEET_DIR/token.key ]]; then
		# One key for the whole fleet: a token signed for one host holds on all.
		(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$FLEET_DIR/token.key" && echo >>"$FLEET_DIR/token.key")
	fi
	local i
	for ((i = 1; i <= NODES; i++)); do
		if running "n$i"; then continue; fi
		mkdir -p "$FLEET_DIR/nats/n$i"
		nats_conf "$i" >"$FLEET_DIR/nats/n$i.conf"
		launch "n$i" "$FLEET_DIR/log/n$i.log" "$NATS_BIN" -c "$FLEET_DIR/nats/n$i.conf"
		say "nats n$i: $(nats_url "$i") (pid $(cat "$(pidfile "n$i")"))"
	done
	for ((i = 1; i <= NODES; i++)); do
		wait_for "nats n$i" 60 nats_healthy "$i"
	done
	wait_for "the JetStream meta group" 60 meta_ready
	local h
	for ((h = 1; h <= ${#HOSTS[@]}; h++)); do
		if running "host$h"; then continue; fi
		local addr=${HOSTS[h - 1]} routes args
		routes=$(host_routes "$h")
		args=(serve --addr "$addr:$PORT" --admin "$addr:$ADMIN_PORT" --nats "$(cluster_urls)"
			--data "$FLEET_DIR/host$h" --token-key-file "$FLEET_DIR/token.key" --shard-prefix "host$h"
			--workers "$WORKERS" --services "$(host_services "$h")" --log-format json)
		[[ -n $routes ]] && args+=(--routes "$routes")
		args+=("${EXTRA[@]}")
		mkdir -p "$FLEET_DIR/host$h"
		launch "host$h" "$FLEET_DIR/log/host$h.log" "$SHOAL_BIN" "${args[@]}"
		say "shoal host$h: ws://$addr:$PORT, admin http://$addr:$ADMIN_PORT (pid $(cat "$(pidfile "host$h")"))"
	done
	for ((h = 1; h <= ${#HOSTS[@]}; h++)); do
		wait_for "shoal host$h" 90 serving "$h"
	done
	say "fleet up: $FLEET_DIR (logs in $FLEET_DIR/log)"
}

# stop NAME SECONDS: SIGTERM to the process, then SIGKILL to its whole
# group if it is not gone in time, and to what it left behind either way.
stop() {
	local name=$1 limit=$2 f pid
	f=$(pidfile "$name")
	[[ -f $f ]] || return 0
	pid=$(cat "$f")
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + limit))
		while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
	fi
	kill -KILL -- "-$pid" 2>/dev/null || true
	rm -f "$f"
	say "stopped $name"
}

down() {
	local h i
	# The gateways first, so that their clients' last events still reach
	# the services, then the bus.
	for ((h = 1; h <= ${#HOSTS[@]}; h++)); do stop "host$h" 40; done
	for ((i = 1; i <= NODES; i++)); do stop "n$i" 20; done
}

status() {
	command -v jq >/dev/null || die "status needs jq"
	local i up=0 leader="" size=""
	for ((i = 1; i <= NODES; i++)); do running "n$i" && up=$((up + 1)); done
	if js=$(curl -fsS --max-time 2 "$(monitor 1)/jsz" 2>/dev/null) ||
		js=$(curl -fsS --max-time 2 "$(monitor 2)/jsz" 2>/dev/null) ||
		js=$(curl -fsS --max-time 2 "$(monitor 3)/jsz" 2>/dev/null); then
		leader=$(jq -r '.meta_cluster.leader // "none"' <<<"$js")
		size=$(jq -r '.meta_cluster.cluster_size // 0' <<<"$js")
	fi
	say "NATS cluster $CLUSTER: $up of $NODES nodes running, JetStream meta leader ${leader:-unknown}, cluster size ${size:-unknown}"
	for ((i = 1; i <= NODES; i++)); do
		if ! running "n$i"; then
			say "  n$i  DOWN  $(nats_url "$i")"
			continue
		fi
		local varz routes conns health
		varz=$(curl -fsS --max-time 2 "$(monitor "$i")/varz" 2>/dev/null || echo '{}')
		routes=$(curl -fsS --max-time 2 "$(monitor "$i")/routez" 2>/dev/null | jq -r '[.routes[]?.remote_name] | unique | length' || echo "?")
		conns=$(jq -r '.connections // "?"' <<<"$varz")
		health=$(curl -sS --max-time 2 "$(monitor "$i")/healthz?js-enabled-only=true" 2>/dev/null | jq -r '.status // "?"' || echo "?")
		say "  n$i  pid $(cat "$(pidfile "n$i")")  $(nats_url "$i")  routed to $routes peers  clients $conns  health $health"
	done
	local h
	say "shoal hosts:"
	for ((h = 1; h <= ${#HOSTS[@]}; h++)); do
		local addr=${HOSTS[h - 1]}
		if ! running "host$h"; then
			say "  host$h  DOWN  ws://$addr:$PORT"
			continue
		fi
		local admin=http://$addr:$ADMIN_PORT procs metrics total
		procs=$(curl -fsS --max-time 2 "$admin/procs" 2>/dev/null || echo '[]')
		metrics=$(curl -fsS --max-time 2 "$admin/metrics" 2>/dev/null || true)
		total=$(awk '/^shoal_connections\{/ {s += $NF} END {print s + 0}' <<<"$metrics")
		say "  host$h  pid $(cat "$(pidfile "host$h")")  ws://$addr:$PORT  services $(host_services "$h")  connections $total"
		local slot pid shard svc
		while IFS=$'\t' read -r slot pid shard; do
			[[ -n $slot ]] || continue
			local n
			n=$(awk -v s="shard=\"$shard\"" 'index($0, "shoal_connections{") == 1 && index($0, s) {print $NF}' <<<"$metrics")
			say "    worker $slot  pid $pid  shard $shard  connections ${n:-0}"
		done < <(jq -r '.[] | select(.role == "worker") | [.slot, .pid, .shard] | @tsv' <<<"$procs")
		while IFS=$'\t' read -r svc slot pid; do
			[[ -n $svc ]] || continue
			say "    service $svc $slot  pid $pid"
		done < <(jq -r '.[] | select(.role == "service") | [.service, .slot, .pid] | @tsv' <<<"$procs")
	done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*)
	say "usage: $0 up|down|status"
	exit 2
	;;
esac
