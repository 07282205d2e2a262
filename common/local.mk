# common/: wire protocol codec (msgpack), errors, logging, checksums and the
# small utilities every other folder shares. A convenience library: libsurge
# absorbs it, and the server and tests link it directly.
noinst_LTLIBRARIES += common/libsurge_common.la
common_libsurge_common_la_SOURCES = \
	common/error.c \
	common/log.h common/log.c \
	common/protocol.h common/protocol.c \
	common/checksum.c \
	common/util.h common/util.c
common_libsurge_common_la_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS)
common_libsurge_common_la_LIBADD = $(MSGPACK_LIBS) -lm
# The wire protocol spec that this codec implements.
EXTRA_DIST += docs/protocol.md
