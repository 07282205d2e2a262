/*
 * deploy/keys.h - `surge keys`: a study's run keys and CURVE key files
 * (docs/protocol.md, "Trust").
 */
#ifndef SURGE_DEPLOY_KEYS_H
#define SURGE_DEPLOY_KEYS_H

/* surge_keys_main - `surge keys run-key|curve ...`; argv[0] is "keys".
 * Returns the process exit status: 0 ok, 1 failure, 2 usage error. */
int surge_keys_main(int argc, char **argv);

#endif /* SURGE_DEPLOY_KEYS_H */
