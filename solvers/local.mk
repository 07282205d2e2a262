# solvers/local.mk: included by the top-level Makefile.am.
# Example MPI solvers. They use only the public client header and MPI, like
# a user's solver would: never common/ or other internals.

# surge-heat2d: the 2D heat equation (solvers/heat2d/README.md).
bin_PROGRAMS += solvers/heat2d/surge-heat2d
solvers_heat2d_surge_heat2d_SOURCES = \
	solvers/heat2d/heat2d.h \
	solvers/heat2d/args.c \
	solvers/heat2d/solver.c \
	solvers/heat2d/main.c
solvers_heat2d_surge_heat2d_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
solvers_heat2d_surge_heat2d_LDADD = clients/libsurge.la $(MPI_LIBS) -lm

# heat2d_numerics: --no-surge, NumPy references. heat2d_surge: against a
# real `surge serve`, per-step checksums of solver and server compared.
TESTS += \
	tests/integration/heat2d_numerics.sh \
	tests/integration/heat2d_surge.sh
EXTRA_DIST += \
	solvers/heat2d/README.md \
	tests/integration/heat2d_numerics.sh \
	tests/integration/heat2d_surge.sh

# surge-advdiff1d: 1D advection-diffusion in Fortran (use mpi_f08) through
# the Fortran module `surge` (solvers/advdiff1d/advdiff1d.f90).
if HAVE_FORTRAN
bin_PROGRAMS += solvers/advdiff1d/surge-advdiff1d
solvers_advdiff1d_surge_advdiff1d_SOURCES = solvers/advdiff1d/advdiff1d.f90
solvers_advdiff1d_surge_advdiff1d_FCFLAGS = $(FC_MODINC)clients/fortran \
	$(MPIFORT_CFLAGS)
solvers_advdiff1d_surge_advdiff1d_LDADD = clients/fortran/libsurge_fortran.la \
	clients/libsurge.la $(MPIFORT_LIBS)
solvers/advdiff1d/surge_advdiff1d-advdiff1d.$(OBJEXT): \
	clients/fortran/surge.mod
TESTS += tests/integration/fortran_study.sh
endif
EXTRA_DIST += tests/integration/fortran_study.sh
if HAVE_FORTRAN
# fortran_errors (use mpi) and fortran_errors_mpifh (mpif.h): the module's
# error paths, run by fortran_study.sh.
check_PROGRAMS += tests/integration/fortran_errors \
	tests/integration/fortran_errors_mpifh
tests_integration_fortran_errors_SOURCES = \
	tests/integration/fortran_errors.F90
tests_integration_fortran_errors_FCFLAGS = $(FC_MODINC)clients/fortran \
	$(MPIFORT_CFLAGS)
tests_integration_fortran_errors_LDADD = \
	clients/fortran/libsurge_fortran.la clients/libsurge.la $(MPIFORT_LIBS)
tests_integration_fortran_errors_mpifh_SOURCES = \
	tests/integration/fortran_errors.F90
tests_integration_fortran_errors_mpifh_FCFLAGS = \
	$(tests_integration_fortran_errors_FCFLAGS) -DUSE_MPIF_H
tests_integration_fortran_errors_mpifh_LDADD = \
	$(tests_integration_fortran_errors_LDADD)
tests/integration/fortran_errors-fortran_errors.$(OBJEXT) \
tests/integration/fortran_errors_mpifh-fortran_errors.$(OBJEXT): \
	clients/fortran/surge.mod
endif
EXTRA_DIST += tests/integration/bindings_check.py

# heat1d-melissa (C) and heat1d-melissa-f (Fortran, mpif.h): solvers
# instrumented for Melissa (solvers/melissa/), built like a user would
# switch one to surge: only the include path (Melissa's header and
# Fortran include) and the link flags (libsurge_melissa) change. Not
# installed: they are examples and test subjects.
noinst_PROGRAMS += solvers/melissa/heat1d-melissa
solvers_melissa_heat1d_melissa_SOURCES = solvers/melissa/heat1d.c
solvers_melissa_heat1d_melissa_CPPFLAGS = -I$(top_srcdir)/clients/melissa
solvers_melissa_heat1d_melissa_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
solvers_melissa_heat1d_melissa_LDADD = clients/melissa/libsurge_melissa.la \
	$(MPI_LIBS)
if HAVE_FORTRAN
noinst_PROGRAMS += solvers/melissa/heat1d-melissa-f
solvers_melissa_heat1d_melissa_f_SOURCES = solvers/melissa/heat1d.f90
solvers_melissa_heat1d_melissa_f_FCFLAGS = -I$(top_srcdir)/clients/melissa \
	$(MPIFORT_CFLAGS)
solvers_melissa_heat1d_melissa_f_LDADD = \
	clients/melissa/libsurge_melissa.la $(MPIFORT_LIBS)
endif
# melissa_misuse: one misuse of the API per run (melissa_study.sh).
check_PROGRAMS += tests/integration/melissa_misuse
tests_integration_melissa_misuse_SOURCES = tests/integration/melissa_misuse.c
tests_integration_melissa_misuse_CPPFLAGS = -I$(top_srcdir)/clients/melissa
tests_integration_melissa_misuse_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
tests_integration_melissa_misuse_LDADD = \
	clients/melissa/libsurge_melissa.la $(MPI_LIBS)
TESTS += tests/integration/melissa_study.sh
EXTRA_DIST += tests/integration/melissa_study.sh

# wave1d_py: a Python solver (NumPy + mpi4py) through the `surge` Python
# package (python/); py_layout prints the C layout its ctypes mirror must
# match.
check_PROGRAMS += tests/integration/py_layout
tests_integration_py_layout_SOURCES = tests/integration/py_layout.c
TESTS += tests/integration/python_study.sh
EXTRA_DIST += tests/integration/python_study.sh \
	solvers/wave1d_py/wave1d.py python/pyproject.toml python/README.md \
	python/surge/__init__.py python/surge/client.py

# external_torch: the FNO example (solvers/heat2d/train_torch.py) trains
# from a live heat2d study through surge serve --consumer external and
# surge.torch; exact per-consumer counts, a consumer that dies.
# external_restart: a surge.torch consumer through a server killed and
# restarted from its checkpoint under surge launch (trainer.kind external).
TESTS += tests/integration/external_torch.sh \
	tests/integration/external_restart.sh
EXTRA_DIST += tests/integration/external_torch.sh \
	tests/integration/external_restart.sh \
	solvers/heat2d/train_torch.py python/surge/torch.py
