# Loopback ports for the scripts that start servers (benches/load.sh,
# benches/callgrind.sh, scripts/testssl.sh). Source it after defining
# `log` and `die`.
#
# Ports come from below the kernel's ephemeral range: a port in that range can
# be taken at any moment as the local end of some outgoing connection (which
# `ss -l` does not show), and then binding it fails with "Address already in
# use". Every socket state counts as taken, not only listeners.

# port_in_use PORT: something listens on PORT.
port_in_use() { [ -n "$(ss -ltnH "sport = :$1" 2>/dev/null)" ]; }

# port_taken PORT: any TCP socket (listening, connected, TIME_WAIT) uses PORT.
port_taken() { [ -n "$(ss -tanH "sport = :$1" 2>/dev/null)" ]; }

USED_PORTS=" "
# free_port: prints a free port not handed out before by this script.
free_port() {
    local low p i
    low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 11024 ] || low=32768
    for i in $(seq 1 400); do
        p=$((10000 + (RANDOM * 32768 + RANDOM) % (low - 10000)))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! port_taken "$p"; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
        : "$i"
    done
    die "no free port found"
}

# wait_listen PID PORT NAME LOGFILE: waits up to 10 s for PID to listen on
# PORT; dies with LOGFILE if PID exits first or never listens.
wait_listen() {
    local pid=$1 port=$2 name=$3 logfile=$4 i
    for i in $(seq 1 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) exited during start-up; its log:"
            cat "$logfile" >&2 2>/dev/null || true
            die "$name did not start"
        fi
        port_in_use "$port" && return 0
        sleep 0.1
        : "$i"
    done
    die "$name did not listen on 127.0.0.1:$port within 10 s"
}
