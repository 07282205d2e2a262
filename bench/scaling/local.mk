# bench/scaling/local.mk: `make bench-dp` measures data-parallel training
# (bench/scaling/bench-dp.c) for R = 1 and 2 ranks on this machine: the
# allreduce time per step of the reference MLP's 25 MB of gradients, the
# share of it hidden behind backward, and training samples/s; it ends with
# one JSON line ({"bench": "dp", "r1": {...}, "r2": {...}, ...}) that
# `make bench-scaling` can take as its training half.
noinst_PROGRAMS += bench/scaling/bench-dp
bench_scaling_bench_dp_SOURCES = bench/scaling/bench-dp.c
bench_scaling_bench_dp_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
bench_scaling_bench_dp_LDADD = trainer/libsurge_replicas.la \
	trainer/libsurge_trainer.la common/libsurge_common.la $(MPI_LIBS) \
	$(BLAS_LIBS) $(JANSSON_LIBS) -lm

# Every rank on one core (OpenBLAS one thread): R = 2 uses both of this
# machine's cores. BENCH_DP_ARGS passes options (--steps, --batch, ...).
BENCH_DP_ENV = OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	OMPI_MCA_rmaps_base_oversubscribe=1 OPENBLAS_NUM_THREADS=1
BENCH_TARGETS += bench-dp
bench-dp: bench/scaling/bench-dp
	@r1=`$(BENCH_DP_ENV) $(MPIRUN) -np 1 ./bench/scaling/bench-dp \
		$(BENCH_DP_ARGS) | tail -n 1` && \
	r2=`$(BENCH_DP_ENV) $(MPIRUN) -np 2 ./bench/scaling/bench-dp \
		$(BENCH_DP_ARGS) | tail -n 1` && \
	echo "# R = 1: $$r1" && echo "# R = 2: $$r2" && \
	s1=`echo "$$r1" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/'` && \
	s2=`echo "$$r2" | sed 's/.*"samples_per_s": \([0-9.]*\).*/\1/'` && \
	echo "{\"bench\": \"dp\", \"training_samples_per_s\": {\"1\": $$s1, \"2\": $$s2}, \"r1\": $$r1, \"r2\": $$r2}"

# `make bench-scaling`: one more server rank on this machine, ingest and
# training, and the R = 1 end-to-end figure (bench/scaling/run.sh): the
# measured per-rank costs that docs/scaling.md projects to 8, 64 and 512
# nodes. One JSON line. BENCH_SCALING_REPS sets the ingest repetitions.
EXTRA_DIST += bench/scaling/run.sh
BENCH_SCALING_REPS = 3
BENCH_TARGETS += bench-scaling
bench-scaling: bench/scaling/bench-dp bench/ingest/ingest_bench \
		bench/trainer/bench-trainer cli/surge solvers/heat2d/surge-heat2d
	MPIRUN='$(MPIRUN)' DEBIAN_PYTHON='$(DEBIAN_PYTHON)' $(SHELL) \
		$(srcdir)/bench/scaling/run.sh '$(abs_top_builddir)' \
		'$(abs_top_srcdir)' $(BENCH_SCALING_REPS)
