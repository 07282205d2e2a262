# bench/gpu/local.mk: `make bench-trainer-cuda` times the CUDA trainer on
# the reference MLP against PyTorch eager, PyTorch with the step in a CUDA
# graph and the GEMM-only bound, batch 256/1024/4096 in fp32/tf32/bf16, and
# ends with one JSON line (without a GPU that line says why and it exits
# 0). bench/gpu/run.sh runs it and the GPU tests on the GPU machine from a
# bundle made here by bench/gpu/bundle.sh.
noinst_PROGRAMS += bench/gpu/bench-trainer-cuda
bench_gpu_bench_trainer_cuda_SOURCES = bench/gpu/bench-trainer-cuda.c
bench_gpu_bench_trainer_cuda_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
bench_gpu_bench_trainer_cuda_LDADD = trainer/libsurge_trainer.la \
	common/libsurge_common.la $(BLAS_LIBS) $(JANSSON_LIBS) -lm
EXTRA_DIST += bench/gpu/bench_torch_cuda.py bench/gpu/run.sh \
	bench/gpu/bundle.sh

BENCH_TARGETS += bench-trainer-cuda
bench-trainer-cuda: bench/gpu/bench-trainer-cuda
	./bench/gpu/bench-trainer-cuda --python '$(DEBIAN_PYTHON)' \
		--script '$(srcdir)/bench/gpu/bench_torch_cuda.py'
