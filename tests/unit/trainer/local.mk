# tests/unit/trainer/local.mk: unit tests of trainer/.
