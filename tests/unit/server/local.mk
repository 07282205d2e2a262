# tests/unit/server/local.mk: unit tests of server/.
