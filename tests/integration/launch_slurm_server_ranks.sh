#!/bin/sh
# tests/integration/launch_slurm_server_ranks.sh - launch_server_ranks.sh
# on a real local Slurm of 2 nodes: the server is a Slurm job of 2 tasks,
# one per node (server.ranks 2, server.nodes 2, scheduler.slurm.server_as_job:
# srun --mpi=pmix --kill-on-bad-exit=1): exact counts across the ranks, and
# one rank killed mid-study ends the job, which the launcher starts again
# whole from the checkpoint. Skips without root or the Slurm packages.
SERVER_RANKS=2
SERVER_SLURM=1
export SERVER_RANKS SERVER_SLURM
exec sh "$SURGE_SRCDIR/tests/integration/launch_server_ranks.sh"
