# server/: the `surge` program (server/surge.c dispatches to subcommands)
# and the server library: ingest (ZeroMQ + libuv), assembly, control.
bin_PROGRAMS += server/surge
server_surge_SOURCES = server/surge.c server/commands.h
# Subcommands from other folders add their library here, before common.
server_surge_LDADD = \
	deploy/libsurge_deploy.la \
	server/libsurge_monitor.la \
	clients/libsurge.la \
	common/libsurge_common.la \
	$(ZMQ_LIBS) $(UV_LIBS) $(MSGPACK_LIBS) $(JANSSON_LIBS) $(GSL_LIBS) \
	$(PTHREAD_LIBS) -lm

# Monitoring (HTTP, metrics, dashboard, surge top): server/monitor.mk.
include %reldir%/monitor.mk
