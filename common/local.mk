# common/: wire protocol codec (msgpack), errors, logging, checksums and the
# small utilities every other folder shares. A convenience library: libsurge
# absorbs it, and the server and tests link it directly.
noinst_LTLIBRARIES += common/libsurge_common.la
common_libsurge_common_la_SOURCES = \
	common/error.c \
	common/auth.h common/auth.c \
	common/alloc.h common/alloc.c \
	common/log.h common/log.c \
	common/pool.h common/pool.c \
	common/protocol.h common/protocol.c \
	common/checksum.c \
	common/rng.h common/rng.c \
	common/util.h common/util.c \
	common/keytab.h common/keytab_impl.h common/keytab.c
common_libsurge_common_la_CFLAGS = $(AM_CFLAGS) $(MSGPACK_CFLAGS) \
	$(SODIUM_CFLAGS) $(ZMQ_CFLAGS)
common_libsurge_common_la_LIBADD = $(MSGPACK_LIBS) $(SODIUM_LIBS) $(ZMQ_LIBS) \
	$(PTHREAD_LIBS) -lm
# False-colour images (viridis, PNG): a library of its own so that libsurge,
# which absorbs libsurge_common, needs no libpng. Linked by `surge predict`
# (trainer/libsurge_predict.la) and the monitor (monitor/libsurge_monitor.la).
noinst_LTLIBRARIES += common/libsurge_image.la
common_libsurge_image_la_SOURCES = common/image.h common/image.c
common_libsurge_image_la_CFLAGS = $(AM_CFLAGS) $(PNG_CFLAGS)
common_libsurge_image_la_LIBADD = $(PNG_LIBS) -lm
# Tables of configuration keys (common/keytab.h): the rows, defaults and
# checks are in libsurge_common above (the reservoir, which has no jansson,
# reads its own table); their JSON setter and printer are a library of
# their own so that libsurge, which absorbs libsurge_common, needs no
# jansson. Linked by the trainer (its "trainer" keys) and the launcher
# (the study file).
noinst_LTLIBRARIES += common/libsurge_keytab.la
common_libsurge_keytab_la_SOURCES = common/keytab.h common/keytab_impl.h \
	common/keytab_json.c
common_libsurge_keytab_la_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
common_libsurge_keytab_la_LIBADD = $(JANSSON_LIBS) -lm
# The wire protocol spec that this codec implements.
EXTRA_DIST += docs/protocol.md
