#!/usr/bin/env bash
# FedRouter on Flower's Deployment Engine, all on this machine (shell: bash, Linux).
#
#   bash training_scripts/run_flower_deployment.sh
#
# Starts one SuperLink and N SuperNodes on 127.0.0.1, runs the project's ServerApp and
# ClientApp on them with `flwr run`, checks the run's final status, and stops every process
# it started, on success, on failure and on Ctrl-C. See docs/deployment.md.
#
# Every variable below can be overridden from the environment (e.g. SUPERLINK_PORT=19091).
# Layout under ${work_root}:
#   app/          the Flower app that `flwr run` bundles (pyproject.toml + fedrouter/)
#   cli/          FLWR_HOME of the `flwr` CLI: config.toml with the SuperLink connection
#   server/       working dir of the SuperLink and so of the ServerApp; own FLWR_HOME, cache
#   node-<i>/     working dir of SuperNode i, its SuperExec and ClientApps; own FLWR_HOME, cache
#   logs/         one log per started process
#   pids          "<name> <pid>" of every process started (each leads its own process group)
#
# SECURITY: by default every process here runs with --insecure (no TLS, no SuperNode
# authentication). That is acceptable ONLY for this local script, where all traffic stays on
# 127.0.0.1. Never use --insecure across machines; docs/deployment.md shows how to enable TLS.
# Opt in to the secure setup here too: TLS_CA_CERT, TLS_SERVER_CERT and TLS_SERVER_KEY turn on
# TLS between the SuperLink and everything that talks to it; SUPERNODE_KEYS_DIR (needs TLS)
# turns on SuperNode authentication and registers each SuperNode's public key before it starts.

set -u

# ---- configuration -----------------------------------------------------------------------
num_supernodes="${NUM_SUPERNODES:-2}"
host=127.0.0.1
superlink_port="${SUPERLINK_PORT:-9091}"          # SuperLink serves Fleet, Control and Runtime API here
supernode_port_base="${SUPERNODE_PORT_BASE:-9094}" # SuperNode i serves its Runtime API on base + i
script_dir="$(cd "$(dirname "$0")" && pwd)"
project_dir="${PROJECT_DIR:-$(cd "$script_dir/.." && pwd)}"
work_root="${WORK_ROOT:-$project_dir/output/flwr-deployment}"
output_dir="${OUTPUT_DIR:-}"                       # default: ${work_root}/server/output
federation="local-deployment"                      # SuperLink connection name (cli/config.toml)
# Overrides of the preset in pyproject.toml's [tool.flwr.app.config] (the keys are
# fedrouter.config.Config fields): only what differs from it, for two SuperNodes and a short
# run (tests/test_defaults.py checks both). num_clients (= num_supernodes) and output_dir
# (absolute) are always set by this script.
default_run_config='sample_clients=2 global_n_clusters=2 split_strategy="multitask_iid"'
default_run_config="$default_run_config max_data_per_client=100 max_eval_size=16"
default_run_config="$default_run_config max_new_tokens=16 eval_batch_size=16 sim_alias=\"deployment\""
run_config="${RUN_CONFIG:-$default_run_config}"
start_timeout="${START_TIMEOUT:-180}"              # seconds to wait for SuperLink and SuperNodes
run_timeout="${RUN_TIMEOUT:-0}"                    # seconds for the run itself; 0: no limit
stop_grace="${STOP_GRACE:-10}"                     # seconds between SIGTERM and SIGKILL
# TLS (all three or none): the CA certificate, and the SuperLink's certificate (its SAN must
# name 127.0.0.1) and private key. Unset: --insecure.
tls_ca_cert="${TLS_CA_CERT:-}"
tls_server_cert="${TLS_SERVER_CERT:-}"
tls_server_key="${TLS_SERVER_KEY:-}"
# SuperNode authentication: a folder with supernode-<i> (private key) and supernode-<i>.pub
# (public key), EC keys in OpenSSH format, for each SuperNode i. Unset: no authentication.
supernode_keys_dir="${SUPERNODE_KEYS_DIR:-}"
python_bin="${PYTHON:-python}"
flwr_bin="${FLWR:-flwr}"
superlink_bin="${FLOWER_SUPERLINK:-flower-superlink}"
supernode_bin="${FLOWER_SUPERNODE:-flower-supernode}"
superexec_bin="${FLOWER_SUPEREXEC:-flower-superexec}"

# ---- helpers -------------------------------------------------------------------------------
say() { printf '[deployment] %s\n' "$*"; }
die() { printf '[deployment] ERROR: %s\n' "$*" >&2; exit 1; }

abspath() { # absolute path of $1 (which need not exist yet)
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}

port_in_use() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

# start NAME DIR FLWR_HOME CACHE CMD...: run CMD in DIR as the leader of a new session (so
# its process group holds its children), with its own FLWR_HOME and FEDROUTER_CACHE, output
# to logs/NAME.log. Every started process (and all it spawns) carries the marker variable
# FEDROUTER_DEPLOYMENT=${work_root} in its environment, which the final sweep looks for.
start() {
    local name=$1 dir=$2 home=$3 cache=$4 pidfile tries=0 pid
    shift 4
    pidfile="$work_root/logs/$name.pid"
    rm -f "$pidfile"
    (
        cd "$dir" || exit 1
        exec env FEDROUTER_DEPLOYMENT="$work_root" FLWR_HOME="$home" FEDROUTER_CACHE="$cache" \
            setsid sh -c 'echo $$ > "$0"; exec "$@"' "$pidfile" "$@" \
            < /dev/null > "$work_root/logs/$name.log" 2>&1
    ) &
    while [ ! -s "$pidfile" ]; do
        tries=$((tries + 1))
        [ "$tries" -gt 100 ] && die "could not start $name (see $work_root/logs/$name.log)"
        sleep 0.1
    done
    pid=$(cat "$pidfile")
    started="$started $name:$pid"
    echo "$name $pid" >> "$work_root/pids"
}

pid_of() { # pid of a started process by name
    for entry in $started; do
        [ "${entry%%:*}" = "$1" ] && { echo "${entry#*:}"; return; }
    done
}

alive() { kill -0 "$1" 2>/dev/null; }
group_alive() { kill -0 -- "-$1" 2>/dev/null; }

marked_pids() { # pids of all processes whose environment carries our marker
    [ -d /proc ] || return 0
    grep -l -z -x -F "FEDROUTER_DEPLOYMENT=$work_root" /proc/[0-9]*/environ 2>/dev/null |
        sed -e 's|^/proc/||' -e 's|/environ$||'
}

show_log() { # last lines of a log, to explain a failure
    [ -f "$work_root/logs/$1.log" ] || return 0
    echo "----- last lines of $work_root/logs/$1.log -----" >&2
    tail -n "${2:-25}" "$work_root/logs/$1.log" >&2
}

stopped=0 started="" tail_pid=""
cleanup() {
    local entry order waited any left
    [ "$stopped" = 1 ] && return
    stopped=1
    [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
    [ -n "$started" ] || return 0
    say "stopping every process started by this script"
    # Newest first: the CLI, then SuperExecs and SuperNodes, then the SuperLink.
    order=""
    for entry in $started; do order="$entry $order"; done
    for entry in $order; do kill -TERM -- "-${entry#*:}" 2>/dev/null; done
    waited=0
    while [ "$waited" -lt $((stop_grace * 10)) ]; do
        any=0
        for entry in $order; do group_alive "${entry#*:}" && any=1; done
        [ "$any" = 0 ] && break
        sleep 0.1
        waited=$((waited + 1))
    done
    for entry in $order; do
        if group_alive "${entry#*:}"; then
            say "  ${entry%%:*} (process group ${entry#*:}) ignored SIGTERM: SIGKILL"
            kill -KILL -- "-${entry#*:}" 2>/dev/null
        fi
    done
    # Flower starts some helpers in their own sessions (the SuperLink's SuperExec and the
    # apps it launches), outside the groups above: find them by the marker and stop them.
    left=$(marked_pids)
    if [ -n "$left" ]; then
        kill -TERM $left 2>/dev/null
        waited=0
        while [ "$waited" -lt $((stop_grace * 10)) ] && [ -n "$(marked_pids)" ]; do
            sleep 0.1
            waited=$((waited + 1))
        done
        left=$(marked_pids)
        [ -n "$left" ] && kill -KILL $left 2>/dev/null
    fi
    sleep 0.2
    left=$(marked_pids)
    if [ -n "$left" ]; then
        say "ERROR: processes still alive after SIGKILL: $left"
        return 1
    fi
    say "all stopped"
}

on_exit() {
    status=$?
    trap - EXIT INT TERM
    cleanup || { [ "$status" = 0 ] && status=1; }
    exit "$status"
}
trap on_exit EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# ---- checks ----------------------------------------------------------------------------------
for tool in "$python_bin" "$flwr_bin" "$superlink_bin" "$supernode_bin" "$superexec_bin" setsid; do
    command -v "$tool" > /dev/null 2>&1 || die "'$tool' not found on PATH (activate the venv?)"
done
for var in num_supernodes superlink_port supernode_port_base start_timeout run_timeout stop_grace; do
    eval "value=\$$var"
    case "$value" in
        '' | *[!0-9]*) die "$(echo "$var" | tr '[:lower:]' '[:upper:]') must be a non-negative integer, got '$value'" ;;
    esac
done
[ "$num_supernodes" -ge 1 ] || die "NUM_SUPERNODES must be at least 1"
case " $(printf '%s' "$run_config" | tr '\n\t' '  ')" in
    *" num_clients="* | *" output_dir="*)
        die "RUN_CONFIG must not set num_clients or output_dir: the script sets them from NUM_SUPERNODES and OUTPUT_DIR" ;;
esac
[ -f "$project_dir/pyproject.toml" ] || die "no pyproject.toml in PROJECT_DIR=$project_dir"
work_root=$(abspath "$work_root")
output_dir=$(abspath "${output_dir:-$work_root/server/output}")
last_port=$((supernode_port_base + num_supernodes - 1))
for port in "$superlink_port" $(seq "$supernode_port_base" "$last_port"); do
    port_in_use "$port" && die "port $host:$port is already in use (set SUPERLINK_PORT / SUPERNODE_PORT_BASE)"
done
if [ "$superlink_port" -ge "$supernode_port_base" ] && [ "$superlink_port" -le "$last_port" ]; then
    die "SUPERLINK_PORT=$superlink_port clashes with the SuperNode ports $supernode_port_base-$last_port"
fi
case "${tls_ca_cert:+x}${tls_server_cert:+x}${tls_server_key:+x}" in
    '') tls=0 ;;
    xxx) tls=1 ;;
    *) die "set all of TLS_CA_CERT, TLS_SERVER_CERT and TLS_SERVER_KEY, or none of them" ;;
esac
if [ "$tls" = 1 ]; then
    for var in tls_ca_cert tls_server_cert tls_server_key; do
        eval "value=\$$var"
        [ -f "$value" ] || die "$(echo "$var" | tr '[:lower:]' '[:upper:]')=$value is not a file"
        eval "$var=\$(abspath \"\$value\")"
    done
fi
if [ -n "$supernode_keys_dir" ]; then
    # Flower refuses SuperNode authentication without TLS.
    [ "$tls" = 1 ] || die "SUPERNODE_KEYS_DIR needs TLS: set TLS_CA_CERT, TLS_SERVER_CERT and TLS_SERVER_KEY"
    supernode_keys_dir=$(abspath "$supernode_keys_dir")
    for i in $(seq 0 $((num_supernodes - 1))); do
        for key in "supernode-$i" "supernode-$i.pub"; do
            [ -f "$supernode_keys_dir/$key" ] || die "no key $supernode_keys_dir/$key for SuperNode $i"
        done
    done
fi

# Apps run from the bundle the CLI uploads; no dependency install (needs internet, and the
# venv already has everything). Flower's telemetry and update check stay off.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FLWR_SUPEREXEC_TASK_POLL_INTERVAL="${FLWR_SUPEREXEC_TASK_POLL_INTERVAL:-0.2}"
export TOKENIZERS_PARALLELISM=false

# ---- prepare the work root -------------------------------------------------------------------
mkdir -p "$work_root" || die "cannot create WORK_ROOT=$work_root"
rm -rf "$work_root/app" "$work_root/cli" "$work_root/logs" "$work_root/pids"
mkdir -p "$work_root/app" "$work_root/cli" "$work_root/logs" \
    "$work_root/server/flwr-home" "$work_root/server/cache" "$output_dir" || die "cannot write $work_root"
: > "$work_root/pids"
i=0
while [ "$i" -lt "$num_supernodes" ]; do
    mkdir -p "$work_root/node-$i/flwr-home" "$work_root/node-$i/cache"
    i=$((i + 1))
done

# The app `flwr run` bundles: the package and a pyproject.toml whose run config lists every
# Config field (missing ones with Config's defaults, so effective values do not change), since
# Flower 1.42 only lets --run-config override keys present in [tool.flwr.app.config]. Its
# [tool.flwr.federations] tables are dropped: `flwr run` would migrate them into the CLI's
# config and comment them out of pyproject.toml; this script writes cli/config.toml itself.
cp -R "$project_dir/fedrouter" "$work_root/app/fedrouter" || die "cannot copy the package"
find "$work_root/app" -name __pycache__ -type d -prune -exec rm -rf {} +
"$python_bin" - "$project_dir/pyproject.toml" "$work_root/app" << 'EOF' || die "cannot stage the app's pyproject.toml"
import dataclasses
import logging
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
import tomli_w

source, app = sys.argv[1], sys.argv[2]
sys.path.insert(0, app)
from fedrouter.config import Config  # noqa: E402

with open(source, "rb") as f:
    project = tomllib.load(f)
flwr = project["tool"]["flwr"]
flwr.pop("federations", None)
run_config = flwr["app"].setdefault("config", {})
logging.disable(logging.WARNING)  # Config()'s notes on its own defaults are noise here
defaults = Config()
for field in dataclasses.fields(Config):
    value = getattr(defaults, field.name)
    if field.name in run_config or value is None:  # TOML has no null; None stays the default
        continue
    run_config[field.name] = ",".join(map(str, value)) if isinstance(value, tuple) else value
with open(f"{app}/pyproject.toml", "wb") as f:
    f.write(tomli_w.dumps(project).encode())
EOF

tls_state=off auth_state=off
if [ "$tls" = 1 ]; then
    tls_state=on
    connection_security="root-certificates = \"$tls_ca_cert\""
    superlink_security=(--ssl-ca-certfile "$tls_ca_cert" --ssl-certfile "$tls_server_cert"
        --ssl-keyfile "$tls_server_key")
    supernode_security=(--root-certificates "$tls_ca_cert")
else
    connection_security="insecure = true  # local script only: see the SECURITY note at the top"
    superlink_security=(--insecure)
    supernode_security=(--insecure)
fi
if [ -n "$supernode_keys_dir" ]; then
    auth_state=on
    superlink_security+=(--enable-supernode-auth)
fi

cat > "$work_root/cli/config.toml" << EOF
[superlink]
default = "$federation"

[superlink.$federation]
address = "$host:$superlink_port"
$connection_security
EOF

check_alive() {
    for entry in $started; do
        alive "${entry#*:}" || { show_log "${entry%%:*}"; die "${entry%%:*} exited early"; }
    done
}

flwr_cli() { FLWR_HOME="$work_root/cli" "$flwr_bin" "$@"; }

online_supernodes() { # SuperNodes online per `flwr supernode ls`; nothing if the SuperLink does not answer
    port_in_use "$superlink_port" || return 0
    flwr_cli supernode ls "$federation" --format json 2> /dev/null |
        "$python_bin" -c 'import json, sys
try:
    answer = json.load(sys.stdin)
except ValueError:
    sys.exit()
if answer.get("success"):
    print(sum(n.get("status") == "online" for n in answer.get("nodes", [])))' 2> /dev/null
}

wait_for_supernodes() { # wait_for_supernodes N: until the SuperLink answers and N SuperNodes are online
    local want=$1 online deadline=$(($(date +%s) + start_timeout))
    while :; do
        check_alive
        online=$(online_supernodes)
        [ -n "$online" ] && [ "$online" -ge "$want" ] && return 0
        if [ "$(date +%s)" -ge "$deadline" ]; then
            show_log superlink
            [ "$want" = 0 ] && die "the SuperLink did not answer within ${start_timeout}s"
            show_log supernode-0
            die "only ${online:-0} of $want SuperNode(s) online after ${start_timeout}s"
        fi
        sleep 1
    done
}

# ---- start the SuperLink and the SuperNodes --------------------------------------------------
say "work root: $work_root"
say "starting SuperLink on $host:$superlink_port (TLS: $tls_state, SuperNode authentication: $auth_state)"
start superlink "$work_root/server" "$work_root/server/flwr-home" "$work_root/server/cache" \
    "$superlink_bin" "${superlink_security[@]}" --host "$host" --port "$superlink_port" \
    --disable-runtime-dependency-installation

# With authentication the SuperLink lets in only SuperNodes whose public key was registered
# through its Control API (`flwr supernode register`); one that starts earlier is refused.
if [ -n "$supernode_keys_dir" ]; then
    say "waiting for the SuperLink to answer (at most ${start_timeout}s)"
    wait_for_supernodes 0
    for i in $(seq 0 $((num_supernodes - 1))); do
        answer=$(flwr_cli supernode register "$supernode_keys_dir/supernode-$i.pub" "$federation" \
            --name "supernode-$i" --format json 2>> "$work_root/logs/flwr-register.log")
        node_id=$(printf '%s' "$answer" | "$python_bin" -c 'import json, sys
try:
    print(json.load(sys.stdin).get("node-id", ""))
except ValueError:
    pass' 2> /dev/null)
        if [ -z "$node_id" ]; then
            show_log flwr-register
            die "could not register $supernode_keys_dir/supernode-$i.pub: $answer"
        fi
        say "registered the public key of SuperNode $i as node $node_id"
    done
fi

# Each SuperNode uses --isolation process: the SuperNode only queues messages, and a SuperExec
# started next to it (same working dir and cache) launches one flwr-clientapp per message. The
# SuperExec talks only to its SuperNode's Runtime API on 127.0.0.1, hence its --insecure.
i=0
while [ "$i" -lt "$num_supernodes" ]; do
    port=$((supernode_port_base + i))
    node="$work_root/node-$i"
    node_args=(--node-config "partition-id=$i num-partitions=$num_supernodes")
    [ -n "$supernode_keys_dir" ] &&
        node_args+=(--auth-supernode-private-key "$supernode_keys_dir/supernode-$i")
    say "starting SuperNode $i (partition-id=$i num-partitions=$num_supernodes, Runtime API $host:$port)"
    start "supernode-$i" "$node" "$node/flwr-home" "$node/cache" \
        "$supernode_bin" "${supernode_security[@]}" --superlink "$host:$superlink_port" \
        --isolation process --host "$host" --port "$port" "${node_args[@]}"
    start "superexec-$i" "$node" "$node/flwr-home" "$node/cache" \
        "$superexec_bin" --insecure --runtime-api-address "$host:$port"
    i=$((i + 1))
done

say "waiting for $num_supernodes SuperNode(s) to come online (at most ${start_timeout}s)"
wait_for_supernodes "$num_supernodes"
say "SuperLink and $num_supernodes SuperNode(s) are up"

# ---- run the app -----------------------------------------------------------------------------
fixed_config="num_clients=$num_supernodes output_dir=\"$output_dir\""
say "flwr run $work_root/app $federation --run-config '$run_config' --run-config '$fixed_config' --stream"
start flwr-run "$work_root" "$work_root/cli" "$work_root/server/cache" \
    "$flwr_bin" run "$work_root/app" "$federation" \
    --run-config "$run_config" --run-config "$fixed_config" --stream
run_pid=$(pid_of flwr-run)
tail -n +1 -f "$work_root/logs/flwr-run.log" --pid="$run_pid" 2> /dev/null &
tail_pid=$!

run_start=$(date +%s)
while alive "$run_pid"; do
    if [ "$run_timeout" -gt 0 ] && [ $(($(date +%s) - run_start)) -ge "$run_timeout" ]; then
        die "the run took longer than RUN_TIMEOUT=${run_timeout}s"
    fi
    sleep 1
done
wait "$tail_pid" 2> /dev/null

run_id=$(sed -n 's/.*Successfully started run \([0-9][0-9]*\).*/\1/p' "$work_root/logs/flwr-run.log" | head -n 1)
[ -n "$run_id" ] || { show_log flwr-run; die "flwr run did not start a run"; }

# --stream ends when the run does; read its final status (finished:completed / :failed / :stopped).
status="" details=""
deadline=$(($(date +%s) + 60))
while :; do
    eval "$(flwr_cli ls "$federation" --run-id "$run_id" --format json 2> /dev/null |
        "$python_bin" -c 'import json, shlex, sys
try:
    run = json.load(sys.stdin)["runs"][0]
except (ValueError, KeyError, IndexError):
    run = {}
print("status=" + shlex.quote(run.get("status", "")))
print("details=" + shlex.quote(run.get("status-details", "")))')"
    case "$status" in finished*) break ;; esac
    [ "$(date +%s)" -ge "$deadline" ] && die "run $run_id has not finished (status: '${status:-unknown}')"
    sleep 1
done

if [ "$status" != "finished:completed" ]; then
    die "run $run_id ended as '$status': $details (logs in $work_root/logs)"
fi
say "run $run_id finished:completed; its run directory is under $output_dir"
exit 0
