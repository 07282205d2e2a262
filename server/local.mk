# server/: `surge serve`, the server library: options, the I/O loop,
# sessions and assembly, stores, the consumer slot and its consumers, the
# glue that feeds the server's figures to monitor/. The `surge` program that
# dispatches to it is cli/.
# The server library (`surge serve`): options, I/O loop, sessions and
# assembly, stores, consumer slot. Unit tests: tests/unit/server/local.mk.
noinst_LTLIBRARIES += server/libsurge_server.la
server_libsurge_server_la_SOURCES = \
	server/options.h server/options.c \
	server/counters.h server/counters.c \
	server/u64map.h server/u64map.c \
	server/store.h server/store.c \
	server/consumer.h server/consumer.c \
	server/feed.h server/feed.c \
	server/train.c server/writer.c server/external.c \
	server/shmring.h server/shmring.c \
	server/ingest.h server/ingest.c \
	server/server.h server/server.c \
	server/monitor.h server/monitor.c \
	server/ranks.h server/ranks.c \
	server/serve.c
server_libsurge_server_la_CFLAGS = $(AM_CFLAGS) $(ZMQ_CFLAGS) $(UV_CFLAGS) \
	$(JANSSON_CFLAGS) $(MSGPACK_CFLAGS) $(MPI_CFLAGS)
# The trainer consumer (server/train.c) links the trainer library.
server_libsurge_server_la_LIBADD = trainer/libsurge_replicas.la \
	trainer/libsurge_trainer.la \
	monitor/libsurge_monitor.la \
	$(ZMQ_LIBS) $(UV_LIBS) $(MSGPACK_LIBS) $(JANSSON_LIBS) $(MPI_LIBS) \
	$(PTHREAD_LIBS) -lm

# Fault tests of `surge serve` with real processes, and their two helper
# programs: a libsurge client rank, and a raw ZeroMQ peer that sends what a
# correct client never would.
check_PROGRAMS += tests/integration/server_client tests/integration/server_peer
tests_integration_server_client_SOURCES = tests/integration/server_client.c
tests_integration_server_client_LDADD = clients/libsurge.la
# Many clients from one process: the 1,000-client load test and benchmark
# (noinst so that `make bench-clients` builds it without `make check`).
noinst_PROGRAMS += tests/integration/many_clients
tests_integration_many_clients_SOURCES = tests/integration/many_clients.c
tests_integration_many_clients_LDADD = clients/libsurge.la $(PTHREAD_LIBS)
tests_integration_server_peer_SOURCES = tests/integration/server_peer.c
tests_integration_server_peer_CFLAGS = $(AM_CFLAGS) $(ZMQ_CFLAGS) \
	$(MSGPACK_CFLAGS)
tests_integration_server_peer_LDADD = common/libsurge_common.la $(ZMQ_LIBS) \
	$(MSGPACK_LIBS) -lm
TESTS += tests/integration/server_faults.sh \
	tests/integration/server_backpressure.sh \
	tests/integration/server_checksum_kill.sh \
	tests/integration/server_hostile.sh \
	tests/integration/server_half_joined.sh \
	tests/integration/server_many_clients.sh
EXTRA_DIST += tests/integration/server_faults.sh \
	tests/integration/server_backpressure.sh \
	tests/integration/server_checksum_kill.sh \
	tests/integration/server_hostile.sh \
	tests/integration/server_half_joined.sh \
	tests/integration/server_many_clients.sh
# The server as an MPI job of R ranks (server/ranks.h): routing, exactly
# once over the ranks, control through rank 0, figures per rank.
TESTS += tests/integration/server_ranks.sh
EXTRA_DIST += tests/integration/server_ranks.sh
# CURVE encryption and authentication (--curve-keys, the ZAP handler).
TESTS += tests/integration/server_curve.sh
EXTRA_DIST += tests/integration/server_curve.sh

# Online training end to end (surge launch with the trainer, surge predict,
# PyTorch, surge serve --resume): server/train.c, trainer/predict.c.
TESTS += tests/integration/train_serve.sh tests/integration/train_feed.sh
EXTRA_DIST += tests/integration/train_serve.sh tests/integration/train_feed.sh
# Data-parallel training in a server of 2 ranks (mpirun, heat2d runs).
TESTS += tests/integration/train_ranks.sh
EXTRA_DIST += tests/integration/train_ranks.sh
# The same on the GPU, resumed on the CPU (skips without a device).
TESTS += tests/integration/train_cuda.sh
EXTRA_DIST += tests/integration/train_cuda.sh
