# clients/fortran/local.mk: libsurge_fortran, the Fortran module `surge`
# (surge.f90) and its C half (glue.c), built when configure found a
# Fortran compiler and Open MPI's Fortran bindings (HAVE_FORTRAN). The
# compiled module file surge.mod is installed next to the library, in
# $(libdir)/surge/fortran (module files are compiler-specific);
# surge-fortran.pc gives the flags to find both.
if HAVE_FORTRAN
lib_LTLIBRARIES += clients/fortran/libsurge_fortran.la
clients_fortran_libsurge_fortran_la_SOURCES = \
	clients/fortran/surge.f90 clients/fortran/glue.c
clients_fortran_libsurge_fortran_la_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS)
clients_fortran_libsurge_fortran_la_FCFLAGS = $(FC_MODOUT)clients/fortran
clients_fortran_libsurge_fortran_la_LIBADD = clients/libsurge.la $(MPI_LIBS)
clients_fortran_libsurge_fortran_la_LDFLAGS = $(AM_LDFLAGS) \
	-version-info 0:0:0
fmoddir = $(libdir)/surge/fortran
nodist_fmod_DATA = clients/fortran/surge.mod
# The module file is a by-product of compiling surge.f90.
clients/fortran/surge.mod: clients/fortran/libsurge_fortran.la
CLEANFILES += clients/fortran/surge.mod
pkgconfig_DATA += clients/fortran/surge-fortran.pc
endif
EXTRA_DIST += clients/fortran/surge-fortran.pc.in
