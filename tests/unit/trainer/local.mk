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
