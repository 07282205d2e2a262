# tests/fuzz/local.mk: libFuzzer harnesses (configure CC=clang
# --enable-fuzzing), their seed corpora (tests/fuzz/corpus/<harness>/) and
# the runner. docs/fuzzing.md says how to run them long.
#
#   make fuzz-check                 each harness for FUZZ_SMOKE_SECONDS (25)
#                                   as one TAP test (the quickstart.sh stage)
#   make fuzz-long FUZZ_SECONDS=3600  each harness that long, all in parallel
#                                   (FUZZ_JOBS, default 1 per harness), new
#                                   inputs kept in build's fuzz-corpus/;
#                                   FUZZ_ONLY="fuzz_http ..." runs a subset
FUZZ_HARNESSES = \
	tests/fuzz/fuzz_protocol \
	tests/fuzz/fuzz_ingest \
	tests/fuzz/fuzz_study \
	tests/fuzz/fuzz_http
FUZZ_SMOKE_SECONDS = 25
FUZZ_SECONDS = 3600
EXTRA_DIST += tests/fuzz/fuzz_run.sh tests/fuzz/corpus \
	tests/fuzz/fuzz_study.dict tests/fuzz/fuzz_http.dict

# Every build replays each harness over its committed corpus (seeds and
# every input that once crashed): tests/fuzz/replay.c, no clang needed.
FUZZ_REPLAY = \
	tests/fuzz/replay_protocol \
	tests/fuzz/replay_ingest \
	tests/fuzz/replay_study \
	tests/fuzz/replay_http
check_PROGRAMS += $(FUZZ_REPLAY)
TESTS += $(FUZZ_REPLAY)
FUZZ_INGEST_LIBS = server/libsurge_server.la monitor/libsurge_monitor.la \
	reservoir/libsurge_reservoir.la common/libsurge_common.la \
	$(ZMQ_LIBS) $(UV_LIBS) $(JANSSON_LIBS) $(MSGPACK_LIBS) \
	$(PTHREAD_LIBS) -lm
FUZZ_STUDY_LIBS = deploy/libsurge_deploy.la common/libsurge_common.la \
	$(JANSSON_LIBS) $(GSL_LIBS) $(PTHREAD_LIBS) -lm
FUZZ_HTTP_LIBS = monitor/libsurge_monitor.la common/libsurge_common.la \
	$(UV_LIBS) $(HTTP_PARSER_LIBS) $(PTHREAD_LIBS) -lm
tests_fuzz_replay_protocol_SOURCES = tests/fuzz/fuzz_protocol.c \
	tests/fuzz/replay.c
tests_fuzz_replay_protocol_CPPFLAGS = $(AM_CPPFLAGS) \
	-DFUZZ_NAME='"fuzz_protocol"'
tests_fuzz_replay_protocol_LDADD = common/libsurge_common.la
tests_fuzz_replay_ingest_SOURCES = tests/fuzz/fuzz_ingest.c \
	tests/fuzz/replay.c
tests_fuzz_replay_ingest_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"fuzz_ingest"'
tests_fuzz_replay_ingest_LDADD = $(FUZZ_INGEST_LIBS)
tests_fuzz_replay_study_SOURCES = tests/fuzz/fuzz_study.c tests/fuzz/replay.c
tests_fuzz_replay_study_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"fuzz_study"'
tests_fuzz_replay_study_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_fuzz_replay_study_LDADD = $(FUZZ_STUDY_LIBS)
tests_fuzz_replay_http_SOURCES = tests/fuzz/fuzz_http.c tests/fuzz/replay.c
tests_fuzz_replay_http_CPPFLAGS = $(AM_CPPFLAGS) -DFUZZ_NAME='"fuzz_http"'
tests_fuzz_replay_http_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS)
tests_fuzz_replay_http_LDADD = $(FUZZ_HTTP_LIBS)

if ENABLE_FUZZING
check_PROGRAMS += $(FUZZ_HARNESSES)
tests_fuzz_fuzz_protocol_SOURCES = tests/fuzz/fuzz_protocol.c
tests_fuzz_fuzz_protocol_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LDFLAGS)
tests_fuzz_fuzz_protocol_LDADD = common/libsurge_common.la
tests_fuzz_fuzz_ingest_SOURCES = tests/fuzz/fuzz_ingest.c
tests_fuzz_fuzz_ingest_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LDFLAGS)
tests_fuzz_fuzz_ingest_LDADD = $(FUZZ_INGEST_LIBS)
tests_fuzz_fuzz_study_SOURCES = tests/fuzz/fuzz_study.c
tests_fuzz_fuzz_study_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS)
tests_fuzz_fuzz_study_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LDFLAGS)
tests_fuzz_fuzz_study_LDADD = $(FUZZ_STUDY_LIBS)
tests_fuzz_fuzz_http_SOURCES = tests/fuzz/fuzz_http.c
tests_fuzz_fuzz_http_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS)
tests_fuzz_fuzz_http_LDFLAGS = $(AM_LDFLAGS) $(FUZZ_LDFLAGS)
tests_fuzz_fuzz_http_LDADD = $(FUZZ_HTTP_LIBS)

# Only the harnesses are built and only the runner is run (the rest of the
# suite runs in build/ and build-asan/).
fuzz-check: $(FUZZ_HARNESSES)
	$(MAKE) $(AM_MAKEFLAGS) check-TESTS \
		check_PROGRAMS='$(FUZZ_HARNESSES)' TESTS=tests/fuzz/fuzz_run.sh \
		TESTS_ENVIRONMENT='FUZZ_MODE=smoke; export FUZZ_MODE; \
		FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS); export FUZZ_SECONDS;'

fuzz-long: $(FUZZ_HARNESSES)
	FUZZ_MODE=long FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_ONLY='$(FUZZ_ONLY)' \
		SURGE_BUILDDIR=$(abs_top_builddir) SURGE_SRCDIR=$(abs_top_srcdir) \
		$(SHELL) $(top_srcdir)/tests/fuzz/fuzz_run.sh
else
fuzz-check fuzz-long:
	@echo "$@: configure CC=clang --enable-fuzzing (docs/fuzzing.md)"; exit 1
endif
.PHONY: fuzz-check fuzz-long
