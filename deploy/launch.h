/*
 * deploy/launch.h - `surge launch`, the subcommand that runs a study
 * (deploy/launch.c has the design); cli/surge.c dispatches to it.
 */
#ifndef SURGE_DEPLOY_LAUNCH_H
#define SURGE_DEPLOY_LAUNCH_H

/* surge_launch_main - `surge launch [options] STUDY.json`; argv[0] is
 * "launch". Returns the exit status: 0 every run ok and the counts add up,
 * 1 a run or the server failed or the study was interrupted, 2 usage or
 * study file errors. Prints its progress and table (a program, not a
 * library call). */
int surge_launch_main(int argc, char **argv);

#endif /* SURGE_DEPLOY_LAUNCH_H */
