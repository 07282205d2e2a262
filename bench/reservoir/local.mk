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
