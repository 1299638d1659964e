#!/usr/bin/env bash
# testssl.sh (Debian's package, command `testssl`) against branchgate's HTTPS
# listener on loopback, offline: a throw-away root and intermediate CA, and two
# leaves for `localhost`, ECDSA P-256 and RSA 2048, each behind its own
# branchgate (--workers 1) in front of `python3 -m http.server`. About two
# minutes: testssl runs one leaf after the other.
#
#   scripts/testssl.sh
#   BG_BIN=target/x86_64-unknown-linux-gnu/release/branchgate KEEP_TMP=1 scripts/testssl.sh
#
# Fails (exit 1, saying why) unless, for both leaves:
# - SSLv2, SSLv3, TLS 1.0 and TLS 1.1 are not offered; TLS 1.2 and 1.3 are;
# - no NULL, aNULL, EXPORT, LOW, 3DES/IDEA or obsolete-CBC cipher is offered,
#   and the AEAD ones are;
# - every vulnerability check (-U: Heartbleed, CCS, Ticketbleed, ROBOT,
#   renegotiation, CRIME, BREACH, POODLE, fallback SCSV, SWEET32, FREAK, DROWN,
#   LOGJAM, BEAST, LUCKY13, RC4) reports OK or INFO: nothing LOW or worse, and
#   no WARN (a check that could not run);
# - a session resumes by a TLS 1.3 ticket, a TLS 1.2 ticket and a TLS 1.2
#   session id (checked with openssl s_client: testssl's own check races).
# BREACH is gated too: it reads the HTTP compression of the page, and neither
# branchgate nor this backend compresses, so a finding would mean branchgate
# started compressing responses on its own; behind a real backend that
# compresses pages with secrets, BREACH is that application's to mitigate.
# Findings of the other sections (certificate, headers, server preferences)
# are printed, with why where they are expected, but not gated: a throw-away
# CA without OCSP or CRL draws some whatever the server does.
# The summary goes to stderr and to target/testssl-summary.txt, testssl's
# findings to target/testssl-<leaf>.json and its report to .log.
#
# Environment:
#   BG_BIN    branchgate binary (default: the release build, built here by scripts/lib/release.sh)
#   CI=true   testssl or openssl that cannot be installed fail the run; off CI
#             they are a loud skip (exit 0)
#   KEEP_TMP=1 keep the temporary directory (certificates, logs)
#
# Every process is started here and only those PIDs are stopped on exit.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
# shellcheck source=scripts/lib/release.sh
. "$ROOT/scripts/lib/release.sh"
TARGET_DIR=$(target_dir)
SUMMARY="$TARGET_DIR/testssl-summary.txt"
LEAVES=(ecdsa-p256 rsa-2048)

log() { printf '%s\n' "$*" >&2; }
die() {
    log "testssl.sh: $*"
    exit 1
}
skip() {
    log "================================================================"
    log "SKIP: $1"
    log "      testssl was NOT run (set CI=true to make this a failure)"
    log "================================================================"
    exit 0
}

# ---------------------------------------------------------------- tools ---

apt_updated=0
install_pkg() { # install_pkg PACKAGE: apt-get as root on Debian, else fails
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq >/dev/null || return 1
        apt_updated=1
    fi
    log "installing $1"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    install_pkg "$2" && command -v "$1" >/dev/null 2>&1 && return 0
    if [ "${CI:-}" = true ]; then
        die "$1 is missing and cannot be installed (package $2)"
    fi
    skip "$1 is missing and cannot be installed here (package $2; run as root on Debian)"
}
need openssl openssl
need testssl testssl.sh
for t in python3 ss curl; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool: $t"
done
TESTSSL_VERSION=$(testssl --version 2>&1 | sed -nE 's/.*testssl(\.sh)? +([0-9][^ ]*) .*/\2/p' | head -n 1)
[ -n "$TESTSSL_VERSION" ] || die "cannot read testssl's version from 'testssl --version'"

if [ -z "${BG_BIN:-}" ]; then
    BG_BIN=$(release_build)
fi
case "$BG_BIN" in /*) ;; *) BG_BIN="$ROOT/$BG_BIN" ;; esac
[ -x "$BG_BIN" ] || die "no branchgate binary at $BG_BIN"

# ------------------------------------------------------------ processes ---

TMP=$(mktemp -d "${TMPDIR:-/tmp}/branchgate-testssl.XXXXXX")
PIDS=()

# shellcheck source=scripts/lib/procs.sh
. "$ROOT/scripts/lib/procs.sh"

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=scripts/lib/ports.sh
. "$ROOT/scripts/lib/ports.sh"

# --------------------------------------------------------- certificates ---

# A root CA, an intermediate and leaves for `localhost`. The chain served is
# leaf + intermediate, leaf-first as the --certs layout wants; testssl trusts
# the root through --add-ca. Leaves last 90 days: testssl flags anything
# closer than 60 days to expiry.
ossl() { # openssl with its chatter in a log, shown only when it fails
    openssl "$@" 2>>"$TMP/openssl.log" || {
        cat "$TMP/openssl.log" >&2
        die "openssl $1 failed"
    }
}

make_certs() {
    local d=$TMP/pki leaf
    mkdir -p "$d"
    printf '%s\n' "basicConstraints=critical,CA:TRUE" \
        "keyUsage=critical,keyCertSign,cRLSign" >"$d/ca.ext"
    printf '%s\n' "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost" >"$d/leaf.ext"
    ossl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$d/root.key" -out "$d/root.pem" -days 365 -sha256 \
        -subj "/CN=branchgate testssl throw-away root" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign"
    ossl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$d/int.key" -out "$d/int.csr" \
        -subj "/CN=branchgate testssl throw-away intermediate"
    ossl x509 -req -in "$d/int.csr" -CA "$d/root.pem" -CAkey "$d/root.key" \
        -CAcreateserial -days 365 -sha256 -extfile "$d/ca.ext" -out "$d/int.pem"
    for leaf in "${LEAVES[@]}"; do
        case "$leaf" in
            ecdsa-p256) ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$d/$leaf.key" ;;
            rsa-2048) ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$d/$leaf.key" ;;
        esac
        ossl req -new -key "$d/$leaf.key" -subj "/CN=localhost" -out "$d/$leaf.csr"
        ossl x509 -req -in "$d/$leaf.csr" -CA "$d/int.pem" -CAkey "$d/int.key" \
            -CAcreateserial -days 90 -sha256 -extfile "$d/leaf.ext" \
            -out "$d/$leaf.pem"
        # nginx-proxy's layout: the name's pair, and the same again as the
        # default for handshakes without SNI (testssl makes some).
        mkdir -p "$TMP/certs-$leaf"
        cat "$d/$leaf.pem" "$d/int.pem" >"$TMP/certs-$leaf/localhost.crt"
        cp "$d/$leaf.key" "$TMP/certs-$leaf/localhost.key"
        cp "$TMP/certs-$leaf/localhost.crt" "$TMP/certs-$leaf/default.crt"
        cp "$d/$leaf.key" "$TMP/certs-$leaf/default.key"
    done
}

# -------------------------------------------------------------- servers ---

log "throw-away CA and leaves (${LEAVES[*]})"
make_certs
CA="$TMP/pki/root.pem"

mkdir -p "$TMP/www"
printf 'hello from the testssl backend\n' >"$TMP/www/index.html"
BACKEND_PORT=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$TMP/www" "$BACKEND_PORT" \
    >"$TMP/backend.log" 2>&1 &
PIDS+=($!)
wait_listen "$!" "$BACKEND_PORT" backend "$TMP/backend.log"

cat >"$TMP/routes.toml" <<EOF
[[route]]
host = "localhost"
upstreams = ["127.0.0.1:$BACKEND_PORT"]
EOF

declare -A HTTPS_PORT
for leaf in "${LEAVES[@]}"; do
    http_port=$(free_port)
    HTTPS_PORT[$leaf]=$(free_port)
    "$BG_BIN" --http "127.0.0.1:$http_port" --https "127.0.0.1:${HTTPS_PORT[$leaf]}" \
        --certs "$TMP/certs-$leaf" --no-docker --routes "$TMP/routes.toml" --workers 1 \
        --admin off --acme off \
        >"$TMP/branchgate-$leaf.log" 2>&1 &
    PIDS+=($!)
    wait_listen "$!" "${HTTPS_PORT[$leaf]}" "branchgate ($leaf)" "$TMP/branchgate-$leaf.log"
    # One request through the whole chain before testssl: a broken set-up
    # fails here, clearly, instead of as a wall of testssl findings.
    port=${HTTPS_PORT[$leaf]}
    curl -fsS --max-time 10 --cacert "$CA" --resolve "localhost:$port:127.0.0.1" \
        "https://localhost:$port/" >/dev/null ||
        die "branchgate ($leaf) does not serve https://localhost:$port/ with the test CA (log: $TMP/branchgate-$leaf.log)"
done

# -------------------------------------------------------------- testssl ---

# Offline: --ip and --nodns none keep testssl off DNS, and without
# --phone-out it fetches no CRL and asks no OCSP responder. The checks:
# protocols (-p), cipher categories (-s), forward secrecy (-f), ciphers per
# protocol (-E), server preferences (-P), server defaults (-S), HTTP headers
# (-h) and every vulnerability (-U). One leaf after the other: side by side
# they load a small machine enough to make testssl's own clients time out.
run_testssl() { # run_testssl LEAF
    local leaf=$1
    (cd "$TMP" && exec testssl --quiet --color 0 --warnings off \
        --connect-timeout 5 --openssl-timeout 5 \
        --ip 127.0.0.1 --nodns none --add-ca "$CA" \
        --jsonfile-pretty "$TMP/testssl-$leaf.json" --logfile "$TMP/testssl-$leaf.log" \
        -p -s -f -E -P -S -h -U \
        "https://localhost:${HTTPS_PORT[$leaf]}" >/dev/null 2>"$TMP/testssl-$leaf.err")
}

mkdir -p "$TARGET_DIR"
started=$SECONDS
for leaf in "${LEAVES[@]}"; do
    log "testssl $TESTSSL_VERSION against the $leaf leaf (about a minute)"
    run_testssl "$leaf" &
    PIDS+=($!)
    # testssl's exit code counts findings in some versions: the JSON decides.
    wait "$!" || true
    [ -s "$TMP/testssl-$leaf.json" ] || {
        log "testssl ($leaf) wrote no findings; its stderr:"
        cat "$TMP/testssl-$leaf.err" >&2 || true
        die "testssl ($leaf) did not run"
    }
    cp "$TMP/testssl-$leaf.json" "$TARGET_DIR/testssl-$leaf.json"
    [ ! -f "$TMP/testssl-$leaf.log" ] || cp "$TMP/testssl-$leaf.log" "$TARGET_DIR/testssl-$leaf.log"
done
elapsed=$((SECONDS - started))

# ----------------------------------------------------------- resumption ---

# testssl's own resumption check races its client: `openssl s_client
# </dev/null` may hang up before the TLS 1.3 ticket (sent after the client's
# Finished) arrives, which testssl reports as a "connect problem". Checked
# here with the client's stdin held open for a moment.
resumes() { # resumes PORT S_CLIENT-FLAGS...: yes if a second handshake resumes the first's session
    local port=$1 sess=$TMP/session out i
    shift
    for i in 1 2 3; do
        rm -f "$sess"
        sleep 1 | openssl s_client -connect "127.0.0.1:$port" -servername localhost "$@" \
            -sess_out "$sess" >/dev/null 2>&1 || true
        if [ -s "$sess" ]; then
            out=$(openssl s_client -connect "127.0.0.1:$port" -servername localhost "$@" \
                -sess_in "$sess" </dev/null 2>/dev/null || true)
            if grep -aq '^Reused' <<<"$out"; then
                echo yes
                return
            fi
        fi
        : "$i"
    done
    echo no
}

log "session resumption (TLS 1.3 ticket, TLS 1.2 ticket, TLS 1.2 session id)"
: >"$TMP/resumption.txt"
for leaf in "${LEAVES[@]}"; do
    port=${HTTPS_PORT[$leaf]}
    {
        echo "$leaf TLS1.3_ticket $(resumes "$port" -tls1_3)"
        echo "$leaf TLS1.2_ticket $(resumes "$port" -tls1_2)"
        echo "$leaf TLS1.2_session_id $(resumes "$port" -tls1_2 -no_ticket)"
    } >>"$TMP/resumption.txt"
done

# ----------------------------------------------------------------- gate ---

commit=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
set +e
python3 - "$TESTSSL_VERSION" "$elapsed" "$TMP" "$commit" "${LEAVES[@]}" >"$SUMMARY" <<'EOF'
import datetime, json, sys

version, elapsed, tmp, commit, leaves = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
BAD = {"LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN", "FATAL"}
PROTOCOLS = [("SSLv2", False), ("SSLv3", False), ("TLS1", False),
             ("TLS1_1", False), ("TLS1_2", True), ("TLS1_3", True)]
CATEGORIES = [("NULL", False), ("aNULL", False), ("EXPORT", False), ("LOW", False),
              ("3DES_IDEA", False), ("AVERAGE", False), ("STRONG", True)]
LABEL = {"AVERAGE": "obsolete CBC", "3DES_IDEA": "3DES/IDEA", "STRONG": "AEAD"}
# Why the findings expected outside the gate are not branchgate's problem.
WHY = {
    "cipher_order": "rustls follows the client's order; every suite it offers is AEAD "
                    "with forward secrecy (Mozilla: prefer_server_ciphers off)",
    "cert_revocation": "the throw-away CA publishes no CRL or OCSP responder",
    "security_headers": "X-Frame-Options, CSP etc. are the backend's to send",
    "sessionresumption_ticket": "testssl's client can hang up before the ticket "
                                "arrives; resumption is checked below",
}
failures = []
today = datetime.date.today().isoformat()
out = [f"testssl {version} against branchgate {commit} on {today}, "
       f"{len(leaves)} leaves, {elapsed} s in testssl (bash scripts/testssl.sh)"]

resumption = {}
with open(f"{tmp}/resumption.txt") as f:
    for line in f:
        leaf, kind, ok = line.split()
        resumption.setdefault(leaf, []).append((kind, ok))

for leaf in leaves:
    with open(f"{tmp}/testssl-{leaf}.json") as f:
        scan = json.load(f)["scanResult"][0]
    by_id = {}
    for section, items in scan.items():
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "id" in item:
                    by_id.setdefault(item["id"], (section, item))
    if scan.get("scanProblem") or not by_id:
        failures.append(f"{leaf}: testssl reported a scan problem: {scan.get('scanProblem')}")

    def get(*ids):
        for i in ids:
            if i in by_id:
                return by_id[i][1]
        return None

    def offered(what, title, checks, finding_id, label):
        """Checks that each of `checks` (name, wanted) is offered or not, as wanted."""
        parts = []
        for name, want in checks:
            item = get(finding_id(name))
            if item is None:
                failures.append(f"{leaf}: {what} {name} was not checked")
                continue
            is_on = item["finding"].startswith("offered")
            parts.append(f"{label(name)} {'yes' if is_on else 'no'}")
            if is_on != want or item["severity"] in {"WARN", "FATAL"}:
                failures.append(f"{leaf}: {what} {name}: {item['finding']} ({item['severity']}), "
                                f"want {'offered' if want else 'not offered'}")
        out.append(f"[{leaf}] {title}: " + ", ".join(parts))

    offered("protocol", "protocols offered", PROTOCOLS, lambda p: p, lambda p: p)
    offered("cipher category", "cipher categories offered", CATEGORIES, lambda c: f"cipherlist_{c}", lambda c: LABEL.get(c, c))

    # -E: "x1302 TLS_AES_256_GCM_SHA384 ECDH 253 AESGCM 256 TLS_AES_256_GCM_SHA384"
    for proto in ("tls1_2", "tls1_3"):
        suites = [it["finding"].split()[-1] for it in scan.get("cipherTests", [])
                  if it["id"].startswith(f"cipher-{proto}_")]
        out.append(f"[{leaf}] {proto} suites: " + (", ".join(suites) or "none listed"))
    for label, ids in (("groups", ("FS_ECDHE_curves", "PFS_ECDHE_curves")),
                       ("ALPN, HTTP/2", ("ALPN_HTTP2",)), ("ALPN, other", ("ALPN",)),
                       ("ticket lifetime", ("TLS_session_ticket",)),
                       ("OCSP stapling", ("OCSP_stapling",)), ("key", ("cert_keySize",)),
                       ("chain", ("cert_chain_of_trust",)), ("HSTS", ("HSTS_time", "HSTS"))):
        item = get(*ids)
        if item is not None:
            out.append(f"[{leaf}] {label}: {item['finding']}")
    for kind, ok in resumption.get(leaf, []):
        if ok != "yes":
            failures.append(f"{leaf}: no session resumption by {kind}")
    out.append(f"[{leaf}] resumption: " + ", ".join(f"{k} {ok}" for k, ok in resumption.get(leaf, [])))

    vulns = scan.get("vulnerabilities", [])
    bad = [v for v in vulns if v["severity"] in BAD]
    for v in bad:
        failures.append(f"{leaf}: {v['id']}: {v['finding']} ({v['severity']})")
    if not vulns:
        failures.append(f"{leaf}: no vulnerability check ran")
    out.append(f"[{leaf}] vulnerabilities: {len(vulns)} findings, {len(bad)} LOW or worse / WARN: "
               + ", ".join(f"{v['id']} {v['severity']}" for v in vulns))

    notes = [(s, it) for s, it in by_id.values()
             if s not in {"vulnerabilities", "protocols", "ciphers"} and it["severity"] in BAD]
    if notes:
        out.append(f"[{leaf}] other findings LOW or worse (not gated):")
        for s, it in notes:
            why = WHY.get(it["id"])
            out.append(f"    {s}/{it['id']}: {it['finding']} ({it['severity']})"
                       + (f"; {why}" if why else ""))

out.append(f"grade: none (testssl {version} has no rating; --rating came with 3.1)"
           if version.startswith(("2.", "3.0")) else "grade: see rating_* in the JSON")
out.append("result: " + ("PASS" if not failures else "FAIL"))
out.extend(f"  FAIL {f}" for f in failures)
print("\n".join(out))
sys.exit(1 if failures else 0)
EOF
rc=$?
set -e
cat "$SUMMARY" >&2
log "summary in $SUMMARY; findings in $TARGET_DIR/testssl-<leaf>.json and .log"
[ "$rc" = 0 ] || die "testssl found problems (above)"
