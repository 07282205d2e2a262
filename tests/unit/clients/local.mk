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
# test_client_ranks: libsurge against a fake server of several ranks
# (routing, the welcome's server list, close over every rank).
check_PROGRAMS += tests/unit/clients/test_client_ranks
TESTS += tests/unit/clients/test_client_ranks
tests_unit_clients_test_client_ranks_SOURCES = \
	tests/unit/clients/test_client_ranks.c
tests_unit_clients_test_client_ranks_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(ZMQ_CFLAGS) $(MSGPACK_CFLAGS)
tests_unit_clients_test_client_ranks_LDADD = clients/libsurge.la \
	common/libsurge_common.la $(ZMQ_LIBS) $(MSGPACK_LIBS) $(CMOCKA_LIBS) \
	$(PTHREAD_LIBS) -lm

# test_fortran_glue: the C half of the Fortran module, without MPI or a
# server (built with the module, when configure found a Fortran compiler).
if HAVE_FORTRAN
check_PROGRAMS += tests/unit/clients/test_fortran_glue
TESTS += tests/unit/clients/test_fortran_glue
tests_unit_clients_test_fortran_glue_SOURCES = \
	tests/unit/clients/test_fortran_glue.c
tests_unit_clients_test_fortran_glue_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_clients_test_fortran_glue_LDADD = \
	clients/fortran/libsurge_fortran.la clients/libsurge.la $(CMOCKA_LIBS)
endif
