# bench/external/local.mk: `make bench-external` measures the samples/s
# that surge serve --consumer external delivers to a Python consumer
# (surge.torch) against the in-process C gather and a per-sample PyTorch
# DataLoader, for 16 KiB and 1 MiB samples at batch 256; one JSON line.
noinst_PROGRAMS += bench/external/bench-external
bench_external_bench_external_SOURCES = bench/external/bench-external.c
bench_external_bench_external_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
bench_external_bench_external_LDADD = server/libsurge_server.la \
	monitor/libsurge_monitor.la trainer/libsurge_trainer.la \
	reservoir/libsurge_reservoir.la \
	clients/libsurge.la common/libsurge_common.la \
	$(ZMQ_LIBS) $(UV_LIBS) $(MSGPACK_LIBS) $(JANSSON_LIBS) $(GSL_LIBS) \
	$(PTHREAD_LIBS) -lm
EXTRA_DIST += bench/external/consume.py

BENCH_TARGETS += bench-external
bench-external: bench/external/bench-external
	./bench/external/bench-external --python '$(DEBIAN_PYTHON)' \
		--script '$(srcdir)/bench/external/consume.py' \
		--pythonpath '$(srcdir)/python'
