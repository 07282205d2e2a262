# tests/local.mk: unit tests live in tests/unit/<folder>/ (one cmocka binary
# per module); integration scripts in tests/integration/ are registered by
# the local.mk of the folder they exercise.
include tests/unit/common/local.mk
include tests/unit/clients/local.mk
include tests/unit/reservoir/local.mk
include tests/unit/trainer/local.mk
include tests/unit/server/local.mk
include tests/unit/deploy/local.mk
include tests/integration/local.mk
include tests/fuzz/local.mk
include tests/tsan.mk

EXTRA_DIST += tests/tap.sh
