# bench/ingest/local.mk: `make bench-ingest` pushes fields of 16K, 64K, 1M
# and 8M from 1 and 4 libsurge sender processes into a real `surge serve`
# and, in the same run, over a bare ZeroMQ PUSH/PULL pair; prints a table
# and one JSON line. BENCH_INGEST_FLAGS passes options (e.g. --reps 3).
noinst_PROGRAMS += bench/ingest/ingest_bench
bench_ingest_ingest_bench_SOURCES = bench/ingest/ingest_bench.c \
	bench/common/harness.c bench/common/harness.h
bench_ingest_ingest_bench_CFLAGS = $(AM_CFLAGS) $(ZMQ_CFLAGS) $(JANSSON_CFLAGS)
bench_ingest_ingest_bench_LDADD = clients/libsurge.la \
	common/libsurge_common.la $(ZMQ_LIBS) $(MSGPACK_LIBS) $(JANSSON_LIBS) -lm

BENCH_TARGETS += bench-ingest
bench-ingest: bench/ingest/ingest_bench$(EXEEXT) cli/surge$(EXEEXT)
	bench/ingest/ingest_bench --surge $(abs_top_builddir)/cli/surge \
		$(BENCH_INGEST_FLAGS)
