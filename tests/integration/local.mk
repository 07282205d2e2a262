# tests/integration/local.mk: end-to-end scripts (TAP), each under a timeout.
