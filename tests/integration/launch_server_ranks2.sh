#!/bin/sh
# tests/integration/launch_server_ranks2.sh - launch_server_ranks.sh with a
# server of 2 ranks (server.ranks: 2, mpirun -np 2 --oversubscribe from the
# environment): exact counts across the ranks, and one rank killed
# mid-study restarts the whole server from its checkpoint.
SERVER_RANKS=2
export SERVER_RANKS
exec sh "$SURGE_SRCDIR/tests/integration/launch_server_ranks.sh"
