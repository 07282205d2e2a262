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

TESTS += tests/integration/heat2d_numerics.sh
EXTRA_DIST += \
	solvers/heat2d/README.md \
	tests/integration/heat2d_numerics.sh
