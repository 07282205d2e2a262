# tests/unit/reservoir/local.mk: unit tests of reservoir/.
check_PROGRAMS += tests/unit/reservoir/test_reservoir
TESTS += tests/unit/reservoir/test_reservoir
tests_unit_reservoir_test_reservoir_SOURCES = \
	tests/unit/reservoir/test_reservoir.c
tests_unit_reservoir_test_reservoir_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_reservoir_test_reservoir_LDADD = reservoir/libsurge_reservoir.la \
	common/libsurge_common.la $(CMOCKA_LIBS) $(PTHREAD_LIBS) -lm

# The device storage's logic on an emulated device (no GPU needed).
check_PROGRAMS += tests/unit/reservoir/test_reservoir_device
TESTS += tests/unit/reservoir/test_reservoir_device
tests_unit_reservoir_test_reservoir_device_SOURCES = \
	tests/unit/reservoir/test_reservoir_device.c \
	tests/unit/reservoir/emu_device.h tests/unit/reservoir/emu_device.c
tests_unit_reservoir_test_reservoir_device_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
tests_unit_reservoir_test_reservoir_device_LDADD = \
	reservoir/libsurge_reservoir.la common/libsurge_common.la \
	$(CMOCKA_LIBS) $(PTHREAD_LIBS) -lm

# The device storage on a real CUDA device; skips without one.
if HAVE_CUDA
check_PROGRAMS += tests/unit/reservoir/test_reservoir_cuda
TESTS += tests/unit/reservoir/test_reservoir_cuda
tests_unit_reservoir_test_reservoir_cuda_SOURCES = \
	tests/unit/reservoir/test_reservoir_cuda.c
tests_unit_reservoir_test_reservoir_cuda_CFLAGS = $(AM_CFLAGS) \
	$(CMOCKA_CFLAGS) $(CUDA_CFLAGS)
tests_unit_reservoir_test_reservoir_cuda_LDADD = \
	reservoir/libsurge_reservoir.la common/libsurge_common.la \
	$(CMOCKA_LIBS) -L$(CUDA_DIR)/lib64 -lcudart $(PTHREAD_LIBS) -lm
endif

# The producer/consumer stress test runs under ThreadSanitizer: the
# reservoir's sources are compiled into it with -fsanitize=thread. TSan
# cannot be combined with ASan, so a --enable-sanitizers build skips it,
# and a TSan binary does not run under valgrind (--enable-valgrind).
if !WITH_SANITIZERS
if !WITH_VALGRIND
check_PROGRAMS += tests/unit/reservoir/test_reservoir_stress
TESTS += tests/unit/reservoir/test_reservoir_stress
tests_unit_reservoir_test_reservoir_stress_SOURCES = \
	tests/unit/reservoir/test_reservoir_stress.c \
	$(RESERVOIR_C_SOURCES) common/util.c common/rng.c common/alloc.c \
	common/pool.c common/log.c
tests_unit_reservoir_test_reservoir_stress_CFLAGS = $(AM_CFLAGS) \
	-fsanitize=thread $(CMOCKA_CFLAGS)
tests_unit_reservoir_test_reservoir_stress_LDFLAGS = $(AM_LDFLAGS) \
	-fsanitize=thread
# The key table's code (common/keytab.c, single-threaded configuration)
# comes from libsurge_common uninstrumented.
tests_unit_reservoir_test_reservoir_stress_LDADD = common/libsurge_common.la \
	$(MSGPACK_LIBS) $(CMOCKA_LIBS) $(PTHREAD_LIBS) -lm
if HAVE_CUDA
tests_unit_reservoir_test_reservoir_stress_LDADD += \
	reservoir/storage_cuda.lo -L$(CUDA_DIR)/lib64 -lcudart -lstdc++
endif
endif
endif
