# tests/unit/common/local.mk: unit tests of common/.
common_test_ldadd = common/libsurge_common.la $(MSGPACK_LIBS) $(CMOCKA_LIBS) -lm

check_PROGRAMS += tests/unit/common/test_protocol
TESTS += tests/unit/common/test_protocol
tests_unit_common_test_protocol_SOURCES = tests/unit/common/test_protocol.c
tests_unit_common_test_protocol_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(MSGPACK_CFLAGS)
tests_unit_common_test_protocol_LDADD = $(common_test_ldadd)

check_PROGRAMS += tests/unit/common/test_checksum
TESTS += tests/unit/common/test_checksum
tests_unit_common_test_checksum_SOURCES = tests/unit/common/test_checksum.c
tests_unit_common_test_checksum_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_common_test_checksum_LDADD = $(common_test_ldadd)

check_PROGRAMS += tests/unit/common/test_util
TESTS += tests/unit/common/test_util
tests_unit_common_test_util_SOURCES = tests/unit/common/test_util.c
tests_unit_common_test_util_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_common_test_util_LDADD = $(common_test_ldadd)

check_PROGRAMS += tests/unit/common/test_auth
TESTS += tests/unit/common/test_auth
tests_unit_common_test_auth_SOURCES = tests/unit/common/test_auth.c
tests_unit_common_test_auth_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(ZMQ_CFLAGS)
tests_unit_common_test_auth_LDADD = $(common_test_ldadd) $(ZMQ_LIBS)

check_PROGRAMS += tests/unit/common/test_pool
TESTS += tests/unit/common/test_pool
tests_unit_common_test_pool_SOURCES = tests/unit/common/test_pool.c
tests_unit_common_test_pool_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_common_test_pool_LDADD = $(common_test_ldadd) $(PTHREAD_LIBS)
