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
