# bench/reservoir/local.mk: `make bench-reservoir` measures batch assembly
# (GB/s) against a bare memcpy gather and NumPy fancy indexing, and put+get
# operations per second; it ends with one JSON line.
noinst_PROGRAMS += bench/reservoir/bench-reservoir
bench_reservoir_bench_reservoir_SOURCES = bench/reservoir/bench-reservoir.c
bench_reservoir_bench_reservoir_CFLAGS = $(AM_CFLAGS)
bench_reservoir_bench_reservoir_LDADD = reservoir/libsurge_reservoir.la \
	common/libsurge_common.la $(PTHREAD_LIBS) -lm
EXTRA_DIST += bench/reservoir/gather_numpy.py

BENCH_TARGETS += bench-reservoir
bench-reservoir: bench/reservoir/bench-reservoir
	./bench/reservoir/bench-reservoir --python '$(DEBIAN_PYTHON)' \
		--script '$(srcdir)/bench/reservoir/gather_numpy.py'

# `make bench-reservoir-feed` (a CUDA build; bench/gpu/reservoir_feed.sh
# runs it on the GPU machine): the reservoir feeding a GPU per storage
# mode, batch 4096 of the 6-1024-1024-1024-4096 model's samples; skips
# without a device; ends with one JSON line. BENCH_RESERVOIR_FEED_FLAGS
# passes options (e.g. --step-ms 0.78).
if HAVE_CUDA
noinst_PROGRAMS += bench/reservoir/bench-reservoir-feed
bench_reservoir_bench_reservoir_feed_SOURCES = \
	bench/reservoir/bench-reservoir-feed.c
bench_reservoir_bench_reservoir_feed_CFLAGS = $(AM_CFLAGS) $(CUDA_CFLAGS)
bench_reservoir_bench_reservoir_feed_LDADD = reservoir/libsurge_reservoir.la \
	common/libsurge_common.la -L$(CUDA_DIR)/lib64 -lcudart \
	$(PTHREAD_LIBS) -lm
BENCH_TARGETS += bench-reservoir-feed
bench-reservoir-feed: bench/reservoir/bench-reservoir-feed
	./bench/reservoir/bench-reservoir-feed $(BENCH_RESERVOIR_FEED_FLAGS)
endif
EXTRA_DIST += bench/gpu/reservoir_feed.sh
