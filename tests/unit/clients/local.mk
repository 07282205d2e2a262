# tests/unit/clients/local.mk: unit tests of clients/ (libsurge against a
# real ZeroMQ ROUTER in a test thread).
check_PROGRAMS += tests/unit/clients/test_client
TESTS += tests/unit/clients/test_client
tests_unit_clients_test_client_SOURCES = tests/unit/clients/test_client.c
tests_unit_clients_test_client_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(ZMQ_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_clients_test_client_LDADD = clients/libsurge.la \
	common/libsurge_common.la $(ZMQ_LIBS) $(MSGPACK_LIBS) $(CMOCKA_LIBS) \
	$(PTHREAD_LIBS) -lm
