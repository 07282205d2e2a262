# tests/integration/local.mk: end-to-end scripts (TAP), each under a timeout.
# lib.sh: the preamble the scripts share (sourced by them, shipped here).
EXTRA_DIST += tests/integration/lib.sh

# Help texts that name study keys name documented ones.
TESTS += tests/integration/help_keys.sh
EXTRA_DIST += tests/integration/help_keys.sh
