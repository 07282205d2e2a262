#!/bin/sh
# tests/integration/server_curve.sh - `surge serve --curve-keys`: ZeroMQ
# CURVE encryption and authentication (docs/protocol.md, "Trust"), real
# processes on 127.0.0.1. Keys from `surge keys curve`. A client without
# the study's client key gets nothing in and nothing out:
#   - a libsurge client without keys, one with another study's keys (its
#     handshake fails), and one that knows the server's public key but has
#     a client key of its own (the ZAP handler refuses it): no welcome,
#     "no surge server answered";
#   - a raw peer holding the study token but no key: its control request
#     gets no reply;
#   - the server received nothing from any of them (a ping with the key
#     counts only itself; server-stats.json: no hello but the good client's,
#     refusals counted);
# while a client with the key streams every step and closes cleanly. A key
# file readable by others is refused by the server and by clients.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE" "$CLIENT" "$PEER" "$PY"
lib_full_stacks
lib_tmpdir
spid=
on_exit() { lib_kill_pids "$spid"; }

tap_plan 13

"$SURGE" keys curve "$tmp/keys" >/dev/null &&
    "$SURGE" keys curve "$tmp/other" >/dev/null
modes=$(stat -c %a "$tmp/keys" "$tmp/keys/server.key" "$tmp/keys/client.key" |
    tr '\n' ' ')
check "surge keys curve: folder 700, key files 600 (got $modes)" \
    test "$modes" = "700 600 600 "

# surge keys run-key: the known answer of common/auth.h's definition.
key=$(SURGE_TOKEN=secret "$SURGE" keys run-key 3)
check "surge keys run-key 3 with token 'secret' (got $key)" test "$key" = \
    65876a87add0540aa9e9bbe69abe5c999ff3fa3aab5f47728a5ca480a64e8c1b
env -u SURGE_TOKEN "$SURGE" keys run-key 3 >/dev/null 2>"$tmp/nokey.err"
rc=$?
check "surge keys run-key without a token: usage error (exit $rc)" \
    grep -q "set SURGE_TOKEN" "$tmp/nokey.err"

export SURGE_TOKEN=curve-token
export SURGE_TIMEOUT_MS=3000
out="$tmp/out"
mkdir -p "$out"
timeout 120 "$SURGE" serve --output-dir "$out" --store-bytes 8M \
    --curve-keys "$tmp/keys/server.key" --http off 2>"$tmp/serve.log" &
spid=$!
if ! lib_wait_file "$out/server.json"; then
    sed 's/^/# /' "$tmp/serve.log"
fi
EP=$(lib_json "$out/server.json" 'j["endpoint"]' 2>/dev/null)
export SURGE_ENDPOINT="$EP"

# Nothing out: no welcome for a client without keys or with a stranger's.
SURGE_SIM_ID=0 timeout 30 "$CLIENT" --steps 3 >"$tmp/plain.out" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "no surge server answered" "$tmp/plain.out"; then
    ok "a client without keys gets no answer"
else
    not_ok "a client without keys gets no answer (rc $rc)"
    sed 's/^/# /' "$tmp/plain.out"
fi
SURGE_SIM_ID=0 SURGE_CURVE_KEYS="$tmp/other/client.key" timeout 30 \
    "$CLIENT" --steps 3 >"$tmp/other.out" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "no surge server answered.*CURVE is on" \
    "$tmp/other.out"; then
    ok "a client with another study's keys gets no answer"
else
    not_ok "a client with another study's keys gets no answer (rc $rc)"
    sed 's/^/# /' "$tmp/other.out"
fi
# The server's public key, with a client key pair the study never made.
grep -v '^server' "$tmp/other/client.key" >"$tmp/stranger.key"
grep '^server' "$tmp/keys/client.key" >>"$tmp/stranger.key"
chmod 600 "$tmp/stranger.key"
SURGE_SIM_ID=0 SURGE_CURVE_KEYS="$tmp/stranger.key" timeout 30 \
    "$CLIENT" --steps 3 >"$tmp/stranger.out" 2>&1
rc=$?
if [ $rc -eq 1 ] && grep -q "no surge server answered" "$tmp/stranger.out"; then
    ok "a client with the server's key but its own client key gets no answer"
else
    not_ok "a client with the server's key but its own client key (rc $rc)"
    sed 's/^/# /' "$tmp/stranger.out"
fi
timeout 30 "$PEER" control "$EP" ping >"$tmp/peer.out" 2>&1
rc=$?
check "a raw peer with the token but no key: no control reply (rc $rc)" \
    grep -q "no reply" "$tmp/peer.out"

# Nothing in: the first message the server ever counted is this ping.
SURGE_CURVE_KEYS="$tmp/keys/client.key" timeout 30 "$PEER" control "$EP" \
    ping >"$tmp/ping.out" 2>&1
check "with the key, a ping is answered and is the only message received: $(cat "$tmp/ping.out")" \
    grep -q "^0 pong messages=1 " "$tmp/ping.out"

SURGE_SIM_ID=1 SURGE_CURVE_KEYS="$tmp/keys/client.key" timeout 30 \
    "$CLIENT" --steps 6 >"$tmp/good.out" 2>&1
rc=$?
check "a client with the study's key streams 6 steps and closes (rc $rc)" \
    test $rc -eq 0
[ $rc -eq 0 ] || sed 's/^/# /' "$tmp/good.out"

SURGE_CURVE_KEYS="$tmp/keys/client.key" timeout 30 "$PEER" control "$EP" \
    end >/dev/null 2>&1
wait "$spid"
rc=$?
spid=
cat >"$tmp/check.py" <<'PYEOF'
import json, sys
j = json.load(open(sys.argv[1]))
io, sims = j["io"], j["sims"]
want = (sims["hello"] == 1 and j["samples"]["train"] == 6
        and io["curve_refused"] >= 1 and io["handshake_failed"] >= 2
        and j["counts_add_up"] is True)
print(f"hello {sims['hello']}, train {j['samples']['train']}, "
      f"curve_refused {io['curve_refused']}, handshake_failed "
      f"{io['handshake_failed']}, counts_add_up {j['counts_add_up']}")
sys.exit(0 if want else 1)
PYEOF
msg=$("$PY" "$tmp/check.py" "$out/server-stats.json" 2>&1)
prc=$?
check "server exit $rc; stats: one hello, 6 samples, refusals counted ($msg)" \
    test $rc -eq 0 -a $prc -eq 0
check "the log names the refused key" \
    grep -q "refused a CURVE client" "$tmp/serve.log"

# Key files others can read are refused, by the server and by clients.
chmod 644 "$tmp/other/server.key" "$tmp/other/client.key"
timeout 30 "$SURGE" serve --output-dir "$tmp/o2" \
    --curve-keys "$tmp/other/server.key" --http off >"$tmp/o2.log" 2>&1
rc=$?
if [ $rc -ne 0 ] && grep -q "chmod 600" "$tmp/o2.log"; then
    ok "surge serve refuses a key file readable by others (exit $rc)"
else
    not_ok "surge serve refuses a key file readable by others (exit $rc)"
    sed 's/^/# /' "$tmp/o2.log"
fi
SURGE_CURVE_KEYS="$tmp/other/client.key" timeout 30 "$CLIENT" --steps 1 \
    >"$tmp/c644.out" 2>&1
check "a client refuses a key file readable by others" \
    grep -q "chmod 600" "$tmp/c644.out"
tap_done
