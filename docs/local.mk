# docs/local.mk: the documentation that ships in the tarball.
EXTRA_DIST += \
	docs/architecture.md \
	docs/configuration.md \
	docs/fuzzing.md \
	docs/melissa.md \
	docs/model-file.md \
	docs/monitoring.md \
	docs/scaling.md \
	docs/slurm.md \
	docs/solvers.md \
	docs/trainer.md
