# cli/: `surge`, the one program users run. cli/surge.c dispatches to the
# subcommands, each declared by the folder that owns it (server/server.h,
# deploy/launch.h, deploy/keys.h, trainer/predict.h) and `surge top`
# (cli/top.c, a client of the monitoring HTTP API). Dependencies point one
# way: cli uses the other folders, none of them uses cli.
bin_PROGRAMS += cli/surge
cli_surge_SOURCES = cli/surge.c cli/top.h cli/top.c
cli_surge_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) $(JANSSON_CFLAGS)
# Subcommands' libraries first, then what they use.
cli_surge_LDADD = \
	deploy/libsurge_deploy.la \
	trainer/libsurge_predict.la \
	server/libsurge_server.la \
	monitor/libsurge_monitor.la \
	reservoir/libsurge_reservoir.la \
	clients/libsurge.la \
	common/libsurge_common.la \
	$(ZMQ_LIBS) $(UV_LIBS) $(MSGPACK_LIBS) $(JANSSON_LIBS) $(GSL_LIBS) \
	$(PTHREAD_LIBS) -lm
