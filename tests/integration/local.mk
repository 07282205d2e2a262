# tests/integration/local.mk: end-to-end scripts (TAP), each under a timeout.
# lib.sh: the preamble the scripts share (sourced by them, shipped here).
EXTRA_DIST += tests/integration/lib.sh
