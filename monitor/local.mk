# monitor/: live monitoring, the library: the metrics registry and its
# renderings (Prometheus, JSON), the HTTP server and client, the dashboard.
# It knows nothing of the server: server/monitor.c feeds it the server's
# figures, cli/top.c reads them over HTTP. docs/monitoring.md.
noinst_LTLIBRARIES += monitor/libsurge_monitor.la
monitor_libsurge_monitor_la_SOURCES = \
	monitor/http.h monitor/http.c \
	monitor/metrics.h monitor/metrics.c
nodist_monitor_libsurge_monitor_la_SOURCES = monitor/dashboard_html.c
monitor_libsurge_monitor_la_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) \
	$(JANSSON_CFLAGS)
# The preview PNGs: common/libsurge_image.la (viridis, libpng).
monitor_libsurge_monitor_la_LIBADD = common/libsurge_image.la $(UV_LIBS) \
	$(JANSSON_LIBS) $(HTTP_PARSER_LIBS) $(PTHREAD_LIBS) -lm

# The dashboard page is compiled in (offline, no CDN): embed.sh turns it
# into a C array with POSIX od and awk.
monitor/dashboard_html.c: monitor/dashboard.html monitor/embed.sh
	$(AM_V_GEN)$(MKDIR_P) monitor && \
	$(SHELL) $(srcdir)/monitor/embed.sh surge_dashboard_html \
		$(srcdir)/monitor/dashboard.html > $@-t && mv -f $@-t $@
CLEANFILES += monitor/dashboard_html.c
EXTRA_DIST += monitor/dashboard.html monitor/embed.sh docs/monitoring.md

# Unit tests (cmocka, one binary per module).
check_PROGRAMS += tests/unit/monitor/test_metrics tests/unit/monitor/test_http
TESTS += tests/unit/monitor/test_metrics tests/unit/monitor/test_http
tests_unit_monitor_test_metrics_SOURCES = tests/unit/monitor/test_metrics.c
tests_unit_monitor_test_metrics_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(JANSSON_CFLAGS) $(UV_CFLAGS)
tests_unit_monitor_test_metrics_LDADD = monitor/libsurge_monitor.la \
	common/libsurge_common.la $(JANSSON_LIBS) $(CMOCKA_LIBS) $(PTHREAD_LIBS)
tests_unit_monitor_test_http_SOURCES = tests/unit/monitor/test_http.c
tests_unit_monitor_test_http_CFLAGS = $(AM_CFLAGS) $(CMOCKA_CFLAGS) \
	$(JANSSON_CFLAGS) $(UV_CFLAGS)
tests_unit_monitor_test_http_LDADD = monitor/libsurge_monitor.la \
	common/libsurge_common.la $(JANSSON_LIBS) $(UV_LIBS) $(CMOCKA_LIBS) \
	$(PTHREAD_LIBS)

# The monitoring layer alone in a process (deterministic values), for the
# HTTP-level integration tests.
check_PROGRAMS += tests/integration/monitor_feed
tests_integration_monitor_feed_SOURCES = tests/integration/monitor_feed.c
tests_integration_monitor_feed_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS)
tests_integration_monitor_feed_LDADD = monitor/libsurge_monitor.la \
	common/libsurge_common.la $(UV_LIBS) -lm

# Integration tests: a real `surge serve` fed by heat2d runs (mpirun), with
# promtool, tmux and headless Chromium; each skips cleanly without its tool.
# The dashboard screenshot lands in tests/integration/artifacts/.
MONITOR_TESTS = \
	tests/integration/monitor_http.sh \
	tests/integration/monitor_top.sh \
	tests/integration/monitor_dashboard.sh \
	tests/integration/monitor_ranks.sh
TESTS += $(MONITOR_TESTS)
EXTRA_DIST += $(MONITOR_TESTS) tests/integration/monitor_common.sh
CLEANFILES += tests/integration/artifacts/dashboard.png \
	tests/integration/artifacts/dashboard-feed.png
