#!/bin/sh
# tests/integration/help_keys.sh - every study-file key that `surge serve
# --help` and `surge launch --help` name (trainer.x, server.x, ...) is a
# key docs/configuration.md documents: a flag's help must send the user
# to a key that exists.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE"
lib_tmpdir

tap_plan 2
doc="$SURGE_SRCDIR/docs/configuration.md"
for cmd in serve launch; do
    timeout 30 "$SURGE" "$cmd" --help >"$tmp/help" 2>&1
    # Keys as the help writes them: section.key, e.g. trainer.max_steps.
    # File names (study.resolved.json, trainer.md) are left out.
    grep -o '\(study\|server\|trainer\|reservoir\|solver\|scheduler\|sampler\)\.[a-z_0-9]*\(\.[a-z]*\)\?' \
        "$tmp/help" | grep -v '\..*\.' | grep -v '^[a-z]*\.md$' |
        sort -u >"$tmp/keys"
    missing=""
    while read -r k; do
        grep -q "^| \`$k\`" "$doc" || missing="$missing $k"
    done <"$tmp/keys"
    if [ -s "$tmp/keys" ] && [ -z "$missing" ]; then
        ok "surge $cmd --help names only documented keys ($(wc -l <"$tmp/keys") keys)"
    else
        not_ok "surge $cmd --help names undocumented keys:${missing:- none found}"
    fi
done
tap_done
