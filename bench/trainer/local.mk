# bench/trainer/local.mk: `make bench-trainer` times the trainer on the
# reference MLP (6-1024-1024-1024-4096, batch 256, Adam) against the sgemm
# bound of the same shapes and against PyTorch (as users run it and with
# malloc tuned), with 1 and 2 threads; it ends with one JSON line.
noinst_PROGRAMS += bench/trainer/bench-trainer
bench_trainer_bench_trainer_SOURCES = bench/trainer/bench-trainer.c
bench_trainer_bench_trainer_CFLAGS = $(AM_CFLAGS) $(BLAS_CFLAGS)
bench_trainer_bench_trainer_LDADD = trainer/libsurge_trainer.la \
	common/libsurge_common.la $(BLAS_LIBS) $(JANSSON_LIBS) -lm
EXTRA_DIST += bench/trainer/bench_torch.py

BENCH_TARGETS += bench-trainer
bench-trainer: bench/trainer/bench-trainer
	./bench/trainer/bench-trainer --python '$(DEBIAN_PYTHON)' \
		--script '$(srcdir)/bench/trainer/bench_torch.py'

# `make bench-trainer-serve`: the end-to-end R = 1 figure (4 heat2d senders
# of 16 KiB fields, reservoir of 6,000, the reference MLP on
# BENCH_TRAINER_THREADS threads) against the sgemm bound measured in the
# same run, with the trainer's time split; one JSON line.
EXTRA_DIST += bench/trainer/serve_e2e.sh
BENCH_TRAINER_THREADS = 2
BENCH_TARGETS += bench-trainer-serve
bench-trainer-serve: bench/trainer/bench-trainer cli/surge \
		solvers/heat2d/surge-heat2d
	MPIRUN='$(MPIRUN)' DEBIAN_PYTHON='$(DEBIAN_PYTHON)' $(SHELL) \
		$(srcdir)/bench/trainer/serve_e2e.sh '$(abs_top_builddir)' 160 \
		$(BENCH_TRAINER_THREADS)
