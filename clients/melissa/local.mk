# clients/melissa/local.mk: libsurge_melissa, Melissa's client API over
# libsurge (docs/melissa.md). Its header and Fortran include keep Melissa's
# names (melissa_api.h, melissa_api.f90), so they are installed in their
# own folder, $(includedir)/surge/melissa, which surge-melissa.pc puts on
# the include path: a Melissa solver switches by changing only its flags.
lib_LTLIBRARIES += clients/melissa/libsurge_melissa.la
clients_melissa_libsurge_melissa_la_SOURCES = clients/melissa/melissa.c \
	clients/melissa/melissa_api.h
clients_melissa_libsurge_melissa_la_CPPFLAGS = $(AM_CPPFLAGS) \
	-I$(top_srcdir)/clients/melissa
clients_melissa_libsurge_melissa_la_CFLAGS = $(AM_CFLAGS) $(MPI_CFLAGS) \
	$(JANSSON_CFLAGS)
clients_melissa_libsurge_melissa_la_LIBADD = clients/libsurge.la \
	$(JANSSON_LIBS) $(MPI_LIBS)
clients_melissa_libsurge_melissa_la_LDFLAGS = $(AM_LDFLAGS) \
	-version-info 0:0:0 -export-symbols-regex '^melissa_'
melissaincludedir = $(includedir)/surge/melissa
melissainclude_HEADERS = clients/melissa/melissa_api.h
dist_melissainclude_DATA = clients/melissa/melissa_api.f90
pkgconfig_DATA += clients/melissa/surge-melissa.pc
EXTRA_DIST += clients/melissa/surge-melissa.pc.in
