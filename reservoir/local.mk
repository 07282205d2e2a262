# reservoir/local.mk: the sample buffer library (policies, stats; no I/O,
# no threads of its own). Depends on common/ and pthreads only. Link it as
#   reservoir/libsurge_reservoir.la common/libsurge_common.la
# (common is not folded in, so a program linking both gets one copy).
noinst_LTLIBRARIES += reservoir/libsurge_reservoir.la
reservoir_libsurge_reservoir_la_SOURCES = \
	reservoir/reservoir.h reservoir/reservoir_internal.h \
	reservoir/reservoir.c
reservoir_libsurge_reservoir_la_CFLAGS = $(AM_CFLAGS)
reservoir_libsurge_reservoir_la_LIBADD = $(PTHREAD_LIBS) -lm

EXTRA_DIST += docs/reservoir.md
