# reservoir/local.mk: the sample buffer library (policies, stats; no I/O,
# no threads of its own). Depends on common/ and pthreads only. Link it as
#   reservoir/libsurge_reservoir.la common/libsurge_common.la
# (common is not folded in, so a program linking both gets one copy).
# RESERVOIR_C_SOURCES: its C files, for programs that compile them in
# (the ThreadSanitizer stress test).
RESERVOIR_C_SOURCES = \
	reservoir/reservoir.c reservoir/config.c reservoir/sims.c \
	reservoir/rate.c reservoir/checkpoint.c \
	reservoir/policy_fifo.c reservoir/policy_firo.c \
	reservoir/policy_reservoir.c \
	reservoir/draw_uniform.c reservoir/draw_balanced.c \
	reservoir/draw_prioritized.c \
	reservoir/storage_host.c
noinst_LTLIBRARIES += reservoir/libsurge_reservoir.la
reservoir_libsurge_reservoir_la_SOURCES = \
	reservoir/reservoir.h reservoir/reservoir_internal.h \
	reservoir/reservoir_impl.h $(RESERVOIR_C_SOURCES)
reservoir_libsurge_reservoir_la_CFLAGS = $(AM_CFLAGS)
reservoir_libsurge_reservoir_la_LIBADD = $(PTHREAD_LIBS) -lm

EXTRA_DIST += docs/reservoir.md
