# tests/unit/deploy/local.mk: unit tests of deploy/.
