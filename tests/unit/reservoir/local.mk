# tests/unit/reservoir/local.mk: unit tests of reservoir/.
