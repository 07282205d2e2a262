#!/bin/sh
# tests/integration/help_keys.sh - every study-file key that `surge serve
# --help` and `surge launch --help` name (trainer.x, server.x, ...) is a
# key docs/configuration.md documents: a flag's help must send the user
# to a key that exists. Also the warnings configuration.md owes the user
# where a key is chosen.
. "$SURGE_SRCDIR/tests/tap.sh"
. "$SURGE_SRCDIR/tests/integration/lib.sh"

lib_need "$SURGE"
lib_tmpdir

tap_plan 3
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
# Where out_norm: element is offered, the reader learns that its
# statistics freeze after out_norm_samples (an online study's first
# samples are its first time steps).
if grep '^| .trainer\.out_norm. ' "$doc" |
    grep -q 'element.*freeze after the first .out_norm_samples'; then
    ok "configuration.md: out_norm element warns that its statistics freeze"
else
    not_ok "configuration.md: out_norm element does not warn of the freeze"
fi
tap_done
