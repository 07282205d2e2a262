# bench/clients/local.mk: `make bench-clients` runs 1,000 libsurge clients
# at once (tests/integration/many_clients) against a real `surge serve`,
# over tcp and ipc, with small (1 KiB) and large (256 KiB) fields, and in the
# same run the baseline of one client; p50/p99 latency from
# surge_client_send to the sample being in the reservoir (medians of
# --reps runs), a table and one JSON line. BENCH_CLIENTS_FLAGS passes
# options (e.g. --reps 5 --clients 2000).
EXTRA_DIST += bench/clients/bench-clients.sh
BENCH_TARGETS += bench-clients
bench-clients: tests/integration/many_clients$(EXEEXT) cli/surge$(EXEEXT)
	sh $(abs_top_srcdir)/bench/clients/bench-clients.sh \
		--surge $(abs_top_builddir)/cli/surge \
		--many $(abs_top_builddir)/tests/integration/many_clients \
		$(BENCH_CLIENTS_FLAGS)
