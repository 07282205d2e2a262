# clients/local.mk: libsurge, the installed client library. It absorbs the
# common convenience library; -fvisibility=hidden plus SURGE_API on the
# public declarations means only the client API is exported.
lib_LTLIBRARIES += clients/libsurge.la
clients_libsurge_la_SOURCES = clients/client.c
clients_libsurge_la_CFLAGS = $(AM_CFLAGS) $(ZMQ_CFLAGS) $(MSGPACK_CFLAGS)
clients_libsurge_la_LIBADD = common/libsurge_common.la $(ZMQ_LIBS) \
	$(MSGPACK_LIBS) $(PTHREAD_LIBS) -lm
# current:revision:age (libtool versioning, not the package version).
clients_libsurge_la_LDFLAGS = $(AM_LDFLAGS) -version-info 0:0:0 \
	-export-symbols-regex '^surge_'

surgeinclude_HEADERS += include/surge/client.h include/surge/error.h \
	include/surge/client_mpi.h
pkgconfig_DATA += clients/surge.pc

# The language bindings over libsurge: Fortran (optional) and Melissa's
# client API.
include %reldir%/fortran/local.mk
include %reldir%/melissa/local.mk
# A solver built outside the tree against `make install` into a prefix,
# with pkg-config's flags only, runs in a study (surge.pc's rpath).
TESTS += tests/integration/install_prefix.sh
EXTRA_DIST += tests/integration/install_prefix.sh
