/*
 * cli/top.h - `surge top`: a terminal view of a running server's monitoring
 * endpoint (docs/monitoring.md). A client of the HTTP API only.
 */
#ifndef SURGE_CLI_TOP_H
#define SURGE_CLI_TOP_H

/* surge_top_main - `surge top [options]`; argv[0] is "top". Returns the
 * process exit status: 0 ok, 1 failure, 2 usage error. */
int surge_top_main(int argc, char **argv);

#endif /* SURGE_CLI_TOP_H */
