# tests/unit/clients/local.mk: unit tests of clients/.
