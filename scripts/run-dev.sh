#!/usr/bin/env bash
# `make run`: a development PKI, the development CSMS (mutual TLS), the gateway and a legacy
# charger that boots, authorizes and runs a short transaction. Ctrl-C stops everything.
set -euo pipefail
bin=${1:-.build/debug}
config=${2:-gateway.yaml}

"$bin/ocpp-sim" pki --state state --charger CP001

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Output through process substitution, so that $! is the program itself (not the sed at the end
# of a pipe) and Ctrl-C stops it.
"$bin/ocpp-sim" csms --state state --port 9443 --ask-configuration --ocpp-version "${NORTH:-1.6}" > >(sed -u 's/^/[csms]    /') 2>&1 &
pids+=($!)
"$bin/ocpp-gateway" run --config "$config" > >(sed -u 's/^/[gateway] /') 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
    (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break
    sleep 0.1
done

echo
echo "── a legacy charger (ws:// + Basic auth) runs a charging session through the gateway (wss:// + mTLS) ──"
"$bin/ocpp-sim" charger --endpoint ws://127.0.0.1:9000/ocpp --id CP001 --password 0123456789abcdef --quiet
echo "── session complete. The CSMS lines above show what reached it over mutual TLS. ──"
echo
echo "The gateway keeps running: chargers connect to ws://127.0.0.1:9000/ocpp/<id>"
echo "  metrics:  curl http://127.0.0.1:9100/metrics"
echo "  health:   curl http://127.0.0.1:9100/healthz"
echo "  reload:   kill -HUP \$(pgrep -f 'ocpp-gateway run')"
echo "Ctrl-C stops the CSMS and the gateway."
wait
