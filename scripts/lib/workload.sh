# The representative traffic that shapes the release binary: the functions
# it runs are laid out first (scripts/symbol-order.sh) and its branch and
# call counts steer the optimizer (scripts/pgo.sh). Source it after defining
# `log`, `die`, `TMP` (a fresh directory), `PIDS` (an array) and `ROOT`, and
# after scripts/lib/ports.sh.
#
#   workload_backend     (warns when no Docker engine answers: run one, so that the
#                        Docker provider's start-up is part of the workload)
#                        nginx backend on 127.0.0.1:$BACKEND serving "hello" at /
#                        and 64 KiB at /64k, a throw-away certificate for
#                        bench.local in $TMP/certs, the bench route in
#                        $TMP/routes.toml; sets BACKEND, HTTP, HTTPS (free ports)
#   workload_traffic     plain HTTP/1.1 (small and 64 KiB bodies, keep-alive and
#                        Connection: close) to $HTTP, then HTTPS (HTTP/1.1 and
#                        h2, one full handshake per request) to $HTTPS; fails on
#                        any error
#   workload_start CMD...  starts CMD (a branchgate binary, or valgrind ...
#                        BINARY) in the background with the workload's flags
#                        (one worker, no access log, admin or ACME), its output
#                        in $TMP/bg.log; sets BG_PID and waits for both listeners

workload_backend() {
    local tool
    # With an engine up, the Docker provider's start-up (connect, list, event
    # stream) runs too; that is how branchgate runs in production.
    if ! docker info >/dev/null 2>&1; then
        log "WARNING: no Docker engine answers: the Docker provider's start-up is left out"
        log "         (start one first, e.g. with scripts/docker-engine.sh's engine_up)"
    fi
    for tool in nginx h2load wrk openssl; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian: nginx-light nghttp2-client wrk openssl)"
    done
    BACKEND=$(free_port)
    HTTP=$(free_port)
    HTTPS=$(free_port)
    mkdir -p "$TMP/www" "$TMP/backend-tmp" "$TMP/certs"
    echo hello >"$TMP/www/index.html"
    head -c 65536 /dev/zero | tr '\0' x >"$TMP/www/64k"
    chmod a+rx "$TMP"
    chmod -R a+rX "$TMP/www"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench.local -addext subjectAltName=DNS:bench.local \
        -keyout "$TMP/certs/default.key" -out "$TMP/certs/default.crt" >"$TMP/openssl.log" 2>&1 ||
        die "openssl could not make a certificate: $(cat "$TMP/openssl.log")"
    sed -e "s|@DIR@|$TMP|g" -e "s|@PORT@|$BACKEND|g" "$ROOT/benches/load/backend.conf.tmpl" >"$TMP/backend.conf"
    nginx -p "$TMP" -e "$TMP/backend-error.log" -c "$TMP/backend.conf" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_listen "$!" "$BACKEND" "the nginx backend" "$TMP/backend-error.log"
    sed -e "s|@BACKEND@|127.0.0.1:$BACKEND|" "$ROOT/benches/load/routes.toml.tmpl" >"$TMP/routes.toml"
}

workload_start() {
    "$@" --http "127.0.0.1:$HTTP" --https "127.0.0.1:$HTTPS" --certs "$TMP/certs" \
        --routes "$TMP/routes.toml" --workers 1 --log-level warn --access-log off --admin off --acme off \
        >"$TMP/bg.log" 2>&1 &
    BG_PID=$!
    PIDS+=("$BG_PID")
    wait_listen "$BG_PID" "$HTTP" branchgate "$TMP/bg.log"
    wait_listen "$BG_PID" "$HTTPS" branchgate "$TMP/bg.log"
}

workload_traffic() {
    local plain="http://127.0.0.1:$HTTP" log="$TMP/load.log"
    h2load --h1 -n 4000 -c 16 -H ':authority: bench.local' "$plain/" >"$log"
    h2load --h1 -n 2000 -c 16 -H ':authority: bench.local' "$plain/64k" >>"$log"
    wrk -t1 -c16 -d2s -H 'Host: bench.local' -H 'Connection: close' "$plain/" >>"$log"
    wrk -t1 -c64 -d2s -H 'Host: bench.local' "$plain/" >>"$log"
    h2load --h1 -n 2000 -c 16 --connect-to "127.0.0.1:$HTTPS" https://bench.local/ >>"$log"
    h2load -n 2000 -c 16 --connect-to "127.0.0.1:$HTTPS" https://bench.local/ >>"$log"
    # A handshake per request (wrk resumes sessions where it can).
    # benches/load/report.lua resolves bench.local (the SNI) to 127.0.0.1.
    wrk -t1 -c16 -d2s -H 'Connection: close' -s "$ROOT/benches/load/report.lua" \
        "https://bench.local:$HTTPS/" >>"$log"
    ! grep -qE "Non-2xx|Socket errors|[1-9][0-9]* (failed|errored)" "$log" ||
        die "the load saw errors: $(grep -E "Non-2xx|Socket errors|failed" "$log")"
}
