# tests/unit/server/local.mk: unit tests of server/ (the ingest side; the
# monitoring library's tests are registered in monitor/local.mk). One cmocka binary
# per module; server_test.h holds the shared message builders.
SERVER_UNIT_TESTS = \
	tests/unit/server/test_sessions \
	tests/unit/server/test_assembler \
	tests/unit/server/test_store \
	tests/unit/server/test_options \
	tests/unit/server/test_feed \
	tests/unit/server/test_u64map \
	tests/unit/server/test_alloc_faults \
	tests/unit/server/test_external \
	tests/unit/server/test_shmring
check_PROGRAMS += $(SERVER_UNIT_TESTS)
TESTS += $(SERVER_UNIT_TESTS)
SERVER_UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(MSGPACK_CFLAGS)
SERVER_UNIT_LDADD = server/libsurge_server.la monitor/libsurge_monitor.la \
	reservoir/libsurge_reservoir.la common/libsurge_common.la \
	$(ZMQ_LIBS) $(UV_LIBS) $(JANSSON_LIBS) $(MSGPACK_LIBS) $(CMOCKA_LIBS) \
	$(PTHREAD_LIBS) -lm
tests_unit_server_test_sessions_SOURCES = tests/unit/server/test_sessions.c \
	tests/unit/server/server_test.h
tests_unit_server_test_sessions_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_sessions_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_assembler_SOURCES = \
	tests/unit/server/test_assembler.c tests/unit/server/server_test.h
tests_unit_server_test_assembler_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_assembler_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_external_SOURCES = tests/unit/server/test_external.c
tests_unit_server_test_external_CFLAGS = $(SERVER_UNIT_CFLAGS) $(ZMQ_CFLAGS) \
	$(JANSSON_CFLAGS)
tests_unit_server_test_external_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_shmring_SOURCES = tests/unit/server/test_shmring.c
tests_unit_server_test_shmring_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_shmring_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_store_SOURCES = tests/unit/server/test_store.c
tests_unit_server_test_store_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_store_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_options_SOURCES = tests/unit/server/test_options.c
tests_unit_server_test_options_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_options_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_feed_SOURCES = tests/unit/server/test_feed.c \
	tests/unit/reservoir/emu_device.h tests/unit/reservoir/emu_device.c
tests_unit_server_test_feed_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_feed_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_u64map_SOURCES = tests/unit/server/test_u64map.c
tests_unit_server_test_u64map_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_u64map_LDADD = $(SERVER_UNIT_LDADD)
tests_unit_server_test_alloc_faults_SOURCES = \
	tests/unit/server/test_alloc_faults.c tests/unit/server/server_test.h
tests_unit_server_test_alloc_faults_CFLAGS = $(SERVER_UNIT_CFLAGS)
tests_unit_server_test_alloc_faults_LDADD = $(SERVER_UNIT_LDADD)
