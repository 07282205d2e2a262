# bench/online_offline/local.mk: `make bench-online-offline` compares online
# training (heat2d streaming through surge serve's trainer) with offline
# training (the same stream written to a file first, then the same C
# trainer reading it back for epochs) under the same wall-clock budget
# (BENCH_BUDGET_S, default 60 s per arm); it ends with one JSON line.
noinst_PROGRAMS += bench/online_offline/offline_train
bench_online_offline_offline_train_SOURCES = \
	bench/online_offline/offline_train.c
bench_online_offline_offline_train_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
bench_online_offline_offline_train_LDADD = trainer/libsurge_trainer.la \
	common/libsurge_common.la $(BLAS_LIBS) $(JANSSON_LIBS) -lm
EXTRA_DIST += bench/online_offline/run.sh bench/online_offline/fno_arm.py

BENCH_BUDGET_S = 60
BENCH_TARGETS += bench-online-offline
bench-online-offline: bench/online_offline/offline_train cli/surge \
		solvers/heat2d/surge-heat2d
	MPIRUN='$(MPIRUN)' PY='$(DEBIAN_PYTHON)' \
		$(SHELL) $(srcdir)/bench/online_offline/run.sh \
		'$(abs_top_builddir)' '$(abs_top_srcdir)' $(BENCH_BUDGET_S)
