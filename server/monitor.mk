# server/monitor.mk: live monitoring (HTTP server, metrics registry,
# dashboard, `surge top`), included from server/local.mk. A convenience
# library of its own, linked into server/surge, so that it and the ingest
# side can be built and changed independently. docs/monitoring.md.
noinst_LTLIBRARIES += server/libsurge_monitor.la
server_libsurge_monitor_la_SOURCES = \
	server/http.h server/http.c \
	server/metrics.h server/metrics.c \
	server/top.c \
	server/monitor.h server/monitor.c
nodist_server_libsurge_monitor_la_SOURCES = server/dashboard_html.c
server_libsurge_monitor_la_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) \
	$(JANSSON_CFLAGS)
# The preview PNGs: common/libsurge_image.la (viridis, libpng).
server_libsurge_monitor_la_LIBADD = common/libsurge_image.la $(UV_LIBS) \
	$(JANSSON_LIBS) $(HTTP_PARSER_LIBS) $(PTHREAD_LIBS) -lm

# The dashboard page is compiled in (offline, no CDN): embed.sh turns it
# into a C array with POSIX od and awk.
server/dashboard_html.c: server/dashboard.html server/embed.sh
	$(AM_V_GEN)$(MKDIR_P) server && \
	$(SHELL) $(srcdir)/server/embed.sh surge_dashboard_html \
		$(srcdir)/server/dashboard.html > $@-t && mv -f $@-t $@
CLEANFILES += server/dashboard_html.c
EXTRA_DIST += server/dashboard.html server/embed.sh docs/monitoring.md

# Unit tests (cmocka, one binary per module).
check_PROGRAMS += tests/unit/server/test_metrics tests/unit/server/test_http
TESTS += tests/unit/server/test_metrics tests/unit/server/test_http
tests_unit_server_test_metrics_SOURCES = tests/unit/server/test_metrics.c
tests_unit_server_test_metrics_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(JANSSON_CFLAGS) $(UV_CFLAGS)
tests_unit_server_test_metrics_LDADD = server/libsurge_monitor.la \
	common/libsurge_common.la $(JANSSON_LIBS) $(CMOCKA_LIBS) $(PTHREAD_LIBS)
tests_unit_server_test_http_SOURCES = tests/unit/server/test_http.c
tests_unit_server_test_http_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(JANSSON_CFLAGS) $(UV_CFLAGS)
tests_unit_server_test_http_LDADD = server/libsurge_monitor.la \
	common/libsurge_common.la $(JANSSON_LIBS) $(UV_LIBS) $(CMOCKA_LIBS) \
	$(PTHREAD_LIBS)

# The monitoring layer alone in a process (deterministic values), for the
# HTTP-level integration tests.
check_PROGRAMS += tests/integration/monitor_feed
tests_integration_monitor_feed_SOURCES = tests/integration/monitor_feed.c
tests_integration_monitor_feed_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS)
tests_integration_monitor_feed_LDADD = server/libsurge_monitor.la \
	common/libsurge_common.la $(UV_LIBS) -lm

# Integration tests: a real `surge serve` fed by heat2d runs (mpirun), with
# promtool, tmux and headless Chromium; each skips cleanly without its tool.
# The dashboard screenshot lands in tests/integration/artifacts/.
MONITOR_TESTS = \
	tests/integration/monitor_http.sh \
	tests/integration/monitor_top.sh \
	tests/integration/monitor_dashboard.sh
TESTS += $(MONITOR_TESTS)
EXTRA_DIST += $(MONITOR_TESTS) tests/integration/monitor_common.sh
CLEANFILES += tests/integration/artifacts/dashboard.png \
	tests/integration/artifacts/dashboard-feed.png
