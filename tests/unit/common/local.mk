# tests/unit/common/local.mk: unit tests of common/.
