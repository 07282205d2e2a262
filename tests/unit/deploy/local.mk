# tests/unit/deploy/local.mk: unit tests of deploy/ (one cmocka binary per
# module). test_keys also checks docs/configuration.md against the key
# tables, so it is told where the sources are.
DEPLOY_UNIT_TESTS = \
	tests/unit/deploy/test_study \
	tests/unit/deploy/test_keys \
	tests/unit/deploy/test_sampler \
	tests/unit/deploy/test_sched_local
check_PROGRAMS += $(DEPLOY_UNIT_TESTS)
TESTS += $(DEPLOY_UNIT_TESTS)
DEPLOY_UNIT_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS)
DEPLOY_UNIT_LDADD = deploy/libsurge_deploy.la \
	reservoir/libsurge_reservoir.la trainer/libsurge_trainer.la \
	common/libsurge_common.la \
	$(JANSSON_LIBS) $(GSL_LIBS) $(ZMQ_LIBS) $(MSGPACK_LIBS) $(BLAS_LIBS) \
	$(PTHREAD_LIBS) $(CMOCKA_LIBS) -lm
tests_unit_deploy_test_study_SOURCES = tests/unit/deploy/test_study.c
tests_unit_deploy_test_study_CFLAGS = $(DEPLOY_UNIT_CFLAGS)
tests_unit_deploy_test_study_LDADD = $(DEPLOY_UNIT_LDADD)
# One table per key (common/keytab.h): the study parser and the trainer's
# agree key by key, and docs/configuration.md matches the tables.
tests_unit_deploy_test_keys_SOURCES = tests/unit/deploy/test_keys.c
tests_unit_deploy_test_keys_CFLAGS = $(DEPLOY_UNIT_CFLAGS) $(JANSSON_CFLAGS) \
	-DSURGE_TOP_SRCDIR='"$(abs_top_srcdir)"'
tests_unit_deploy_test_keys_LDADD = $(DEPLOY_UNIT_LDADD)
tests_unit_deploy_test_sampler_SOURCES = tests/unit/deploy/test_sampler.c
tests_unit_deploy_test_sampler_CFLAGS = $(DEPLOY_UNIT_CFLAGS)
tests_unit_deploy_test_sampler_LDADD = $(DEPLOY_UNIT_LDADD)

# The slurm scheduler's command layer (deploy/scheduler_slurm.h).
check_PROGRAMS += tests/unit/deploy/test_scheduler_slurm
TESTS += tests/unit/deploy/test_scheduler_slurm
tests_unit_deploy_test_scheduler_slurm_SOURCES = \
	tests/unit/deploy/test_scheduler_slurm.c
tests_unit_deploy_test_scheduler_slurm_CFLAGS = $(DEPLOY_UNIT_CFLAGS)
tests_unit_deploy_test_scheduler_slurm_LDADD = $(DEPLOY_UNIT_LDADD)
tests_unit_deploy_test_sched_local_SOURCES = \
	tests/unit/deploy/test_sched_local.c
tests_unit_deploy_test_sched_local_CFLAGS = $(DEPLOY_UNIT_CFLAGS)
tests_unit_deploy_test_sched_local_LDADD = $(DEPLOY_UNIT_LDADD)
