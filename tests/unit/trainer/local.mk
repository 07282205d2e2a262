# tests/unit/trainer/local.mk: unit tests of trainer/.
trainer_test_cflags = $(AM_CFLAGS) $(CMOCKA_CFLAGS) $(BLAS_CFLAGS)
trainer_test_ldadd = trainer/libsurge_trainer.la common/libsurge_common.la \
	$(BLAS_LIBS) $(JANSSON_LIBS) $(CMOCKA_LIBS) -lm

check_PROGRAMS += tests/unit/trainer/test_gradients
TESTS += tests/unit/trainer/test_gradients
tests_unit_trainer_test_gradients_SOURCES = \
	tests/unit/trainer/test_gradients.c
tests_unit_trainer_test_gradients_CFLAGS = $(trainer_test_cflags)
tests_unit_trainer_test_gradients_LDADD = $(trainer_test_ldadd)

check_PROGRAMS += tests/unit/trainer/test_trainer
TESTS += tests/unit/trainer/test_trainer
tests_unit_trainer_test_trainer_SOURCES = tests/unit/trainer/test_trainer.c
tests_unit_trainer_test_trainer_CFLAGS = $(trainer_test_cflags)
tests_unit_trainer_test_trainer_LDADD = $(trainer_test_ldadd)

# Integration: a model file from the C trainer, loaded in PyTorch.
check_PROGRAMS += tests/integration/trainer_torch_gen
tests_integration_trainer_torch_gen_SOURCES = \
	tests/integration/trainer_torch_gen.c
tests_integration_trainer_torch_gen_CFLAGS = $(AM_CFLAGS)
tests_integration_trainer_torch_gen_LDADD = $(trainer_test_ldadd)
TESTS += tests/integration/trainer_torch.sh
EXTRA_DIST += tests/integration/trainer_torch.sh \
	tests/integration/trainer_torch.py docs/model-file.md docs/trainer.md

check_PROGRAMS += tests/unit/trainer/test_backend
TESTS += tests/unit/trainer/test_backend
tests_unit_trainer_test_backend_SOURCES = tests/unit/trainer/test_backend.c
tests_unit_trainer_test_backend_CFLAGS = $(trainer_test_cflags)
tests_unit_trainer_test_backend_LDADD = $(trainer_test_ldadd)

# CUDA against CPU on the same inputs; prints a TAP skip without a CUDA
# build or device.
check_PROGRAMS += tests/unit/trainer/test_backend_cuda
TESTS += tests/unit/trainer/test_backend_cuda
tests_unit_trainer_test_backend_cuda_SOURCES = \
	tests/unit/trainer/test_backend_cuda.c
tests_unit_trainer_test_backend_cuda_CFLAGS = $(trainer_test_cflags) \
	$(CUDA_CFLAGS)
tests_unit_trainer_test_backend_cuda_LDADD = $(trainer_test_ldadd)

# Data-parallel steps without MPI: one replica, and two as threads.
check_PROGRAMS += tests/unit/trainer/test_dp
TESTS += tests/unit/trainer/test_dp
tests_unit_trainer_test_dp_SOURCES = tests/unit/trainer/test_dp.c
tests_unit_trainer_test_dp_CFLAGS = $(trainer_test_cflags)
tests_unit_trainer_test_dp_LDADD = $(trainer_test_ldadd) -lpthread

# Data-parallel equivalence under mpirun -np 2 (trainer.h DATA PARALLEL).
check_PROGRAMS += tests/integration/trainer_dp_equiv
tests_integration_trainer_dp_equiv_SOURCES = \
	tests/integration/trainer_dp_equiv.c
tests_integration_trainer_dp_equiv_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
tests_integration_trainer_dp_equiv_LDADD = trainer/libsurge_replicas.la \
	$(trainer_test_ldadd) $(MPI_LIBS)
TESTS += tests/integration/trainer_dp.sh tests/integration/trainer_dp_cuda.sh
EXTRA_DIST += tests/integration/trainer_dp.sh \
	tests/integration/trainer_dp_cuda.sh

# The threaded passes of the cpu backend against the 1-thread result.
check_PROGRAMS += tests/unit/trainer/test_threads
TESTS += tests/unit/trainer/test_threads
tests_unit_trainer_test_threads_SOURCES = tests/unit/trainer/test_threads.c
tests_unit_trainer_test_threads_CFLAGS = $(trainer_test_cflags)
tests_unit_trainer_test_threads_LDADD = $(trainer_test_ldadd)
