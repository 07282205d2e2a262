# trainer/local.mk: included by the top-level Makefile.am.
# The trainer library: MLP, optimizers, backends behind an ops table, and
# the model/checkpoint files. Hot loops want -O3 (HOT_CFLAGS: vectorisation,
# but not in debug or coverage builds) and
# -fno-math-errno (sqrtf as one instruction); -fopenmp-simd only enables the
# `omp simd` reduction pragmas (no OpenMP runtime). Depends on common/,
# OpenBLAS and jansson (the safetensors header and the study's "trainer"
# section are JSON).
noinst_LTLIBRARIES += trainer/libsurge_trainer.la
trainer_libsurge_trainer_la_SOURCES = \
	trainer/trainer.h \
	trainer/trainer_internal.h \
	trainer/backend.h trainer/backend_cpu.c \
	trainer/mlp.h trainer/mlp.c \
	trainer/config.c \
	trainer/trainer.c \
	trainer/safetensors.h trainer/safetensors.c \
	trainer/model.c \
	trainer/peek.c
trainer_libsurge_trainer_la_CFLAGS = $(AM_CFLAGS) $(BLAS_CFLAGS) \
	$(JANSSON_CFLAGS) $(HOT_CFLAGS) -fno-math-errno -fopenmp-simd
trainer_libsurge_trainer_la_LIBADD = common/libsurge_common.la \
	$(BLAS_LIBS) $(JANSSON_LIBS) -lm

# `surge predict` (trainer/predict.c): the model file to .npy and PNG. A
# library of its own so that the trainer library needs no libpng (the PNG
# encoder is common/libsurge_image.la).
noinst_LTLIBRARIES += trainer/libsurge_predict.la
trainer_libsurge_predict_la_SOURCES = trainer/predict.c
trainer_libsurge_predict_la_CFLAGS = $(AM_CFLAGS)
trainer_libsurge_predict_la_LIBADD = trainer/libsurge_trainer.la \
	common/libsurge_image.la common/libsurge_common.la -lm
