# deploy/: `surge launch`: the study file, design of experiments, schedulers
# (local Open MPI; Slurm plugs into the same ops table), the server's
# lifecycle, fault tolerance and the study summary. A convenience library
# linked into the `surge` program (server/local.mk).
noinst_LTLIBRARIES += deploy/libsurge_deploy.la
deploy_libsurge_deploy_la_SOURCES = \
	deploy/util.h deploy/util.c \
	deploy/proc.h deploy/proc.c \
	deploy/study.h deploy/study.c \
	deploy/study_config.h deploy/study_config.c \
	deploy/sampler.h deploy/sampler.c \
	deploy/control.h deploy/control.c \
	deploy/scheduler.h deploy/sched_local.c \
	deploy/scheduler_slurm.h deploy/scheduler_slurm.c \
	deploy/server_proc.h deploy/server_proc.c \
	deploy/launch.h deploy/launch.c \
	deploy/keys.c
deploy_libsurge_deploy_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(GSL_CFLAGS) $(ZMQ_CFLAGS) $(UV_CFLAGS)
deploy_libsurge_deploy_la_LIBADD = reservoir/libsurge_reservoir.la \
	trainer/libsurge_trainer.la common/libsurge_keytab.la \
	common/libsurge_common.la $(JANSSON_LIBS) $(GSL_LIBS) $(ZMQ_LIBS)

# Integration tests of the launcher (real mpirun, real server).
TESTS += tests/integration/e2e_study.sh \
	tests/integration/launch_faults.sh \
	tests/integration/launch_interrupt.sh \
	tests/integration/launch_server_restart.sh \
	tests/integration/launch_tmpdirs.sh \
	tests/integration/launch_resume.sh \
	tests/integration/launch_nospace.sh \
	tests/integration/launch_slurm_server.sh \
	tests/integration/launch_cli.sh \
	tests/integration/launch_training.sh \
	tests/integration/launch_server_ranks.sh \
	tests/integration/launch_server_ranks2.sh
EXTRA_DIST += tests/integration/e2e_study.sh \
	tests/integration/launch_faults.sh \
	tests/integration/launch_interrupt.sh \
	tests/integration/launch_server_restart.sh \
	tests/integration/launch_tmpdirs.sh \
	tests/integration/launch_resume.sh \
	tests/integration/launch_nospace.sh \
	tests/integration/launch_slurm_server.sh \
	tests/integration/launch_cli.sh \
	tests/integration/launch_training.sh \
	tests/integration/launch_server_ranks.sh \
	tests/integration/launch_server_ranks2.sh \
	docs/configuration.md \
	solvers/heat2d/study.json \
	solvers/heat2d/study-ranks.json

# Trust: a run cannot take another run's ranks (per-run keys), and CURVE
# encryption of a whole study (docs/protocol.md, "Trust").
TESTS += tests/integration/launch_hijack.sh \
	tests/integration/launch_encrypted.sh
EXTRA_DIST += tests/integration/launch_hijack.sh \
	tests/integration/launch_encrypted.sh

# The fault soak, by hand (minutes; not in make check): SIGKILL of server,
# ranks, launcher and SIGINT at random moments, --resume after the
# launcher's. SURGE_BUILDDIR=$PWD/build SURGE_SRCDIR=. sh
# tests/soak/launch_soak.sh [TRIALS]
EXTRA_DIST += tests/soak/launch_soak.sh

# The slurm scheduler: its test starts a single-machine Slurm with
# deploy/slurm-local.sh (skips without root or the Slurm packages).
TESTS += tests/integration/slurm_study.sh \
	tests/integration/slurm_queue_wait.sh \
	tests/integration/launch_slurm_server_ranks.sh
EXTRA_DIST += tests/integration/slurm_study.sh \
	tests/integration/slurm_queue_wait.sh \
	tests/integration/launch_slurm_server_ranks.sh \
	deploy/slurm-local.sh \
	solvers/heat2d/study-slurm.json \
	solvers/heat2d/study-slurm-ranks.json
