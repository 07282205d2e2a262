# bench/monitoring/local.mk: `make bench-monitoring` times the same ingest
# run into a real `surge serve` with monitoring off and with the dashboard's
# requests (plus a /metrics scrape) every second, alternating, medians; the
# difference must stay under 2%. Ends with one JSON line.
# BENCH_MONITORING_FLAGS passes options (e.g. --reps 7 --steps 300000).
noinst_PROGRAMS += bench/monitoring/monitor_bench
bench_monitoring_monitor_bench_SOURCES = bench/monitoring/monitor_bench.c \
	bench/common/harness.c bench/common/harness.h
bench_monitoring_monitor_bench_CFLAGS = $(AM_CFLAGS) $(JANSSON_CFLAGS) \
	$(UV_CFLAGS)
bench_monitoring_monitor_bench_LDADD = monitor/libsurge_monitor.la \
	clients/libsurge.la common/libsurge_common.la $(JANSSON_LIBS) \
	$(HTTP_PARSER_LIBS) -lm

BENCH_TARGETS += bench-monitoring
bench-monitoring: bench/monitoring/monitor_bench$(EXEEXT) cli/surge$(EXEEXT)
	bench/monitoring/monitor_bench --surge $(abs_top_builddir)/cli/surge \
		$(BENCH_MONITORING_FLAGS)
