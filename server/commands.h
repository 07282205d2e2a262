/*
 * server/commands.h - the subcommands of the `surge` program. Each lives in
 * the folder that owns it and is reached through the table in surge.c. A
 * command returns the process exit status (0 ok, 1 failure, 2 usage error).
 */
#ifndef SURGE_SERVER_COMMANDS_H
#define SURGE_SERVER_COMMANDS_H

int surge_serve_main(int argc, char **argv);   /* server/serve.c */
int surge_launch_main(int argc, char **argv);  /* deploy/launch.c */
int surge_top_main(int argc, char **argv);     /* server/top.c */
int surge_predict_main(int argc, char **argv); /* trainer/predict.c */
int surge_keys_main(int argc, char **argv);    /* deploy/keys.c */

#endif /* SURGE_SERVER_COMMANDS_H */
