/*
 * deploy/util.h - small file and randomness helpers the launcher needs
 * beyond common/util.h: an interruptible sleep, bounded file reads, mkdir -p,
 * random hex tokens and dirname. Generic enough for common/ if another part
 * needs them.
 *
 * Errors: functions return 0 or -errno. Thread-safety: all are reentrant.
 */
#ifndef SURGE_DEPLOY_UTIL_H
#define SURGE_DEPLOY_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* surge_deploy_sleep - sleep for seconds (>= 0); returns early, without
 * error, when a signal arrives so the caller can look at its flags. */
void surge_deploy_sleep(double seconds);

/* surge_deploy_read_file - read the whole file at path into a new
 * NUL-terminated buffer (*out, owned by the caller, free()) of *len bytes.
 * Returns -EFBIG when the file exceeds cap bytes, -errno otherwise. *out is
 * untouched on failure. */
int surge_deploy_read_file(const char *path, size_t cap, char **out,
                           size_t *len);

/* surge_deploy_mkdir_p - create path and its missing parents (mode 0755);
 * an existing directory is fine. */
int surge_deploy_mkdir_p(const char *path);

/* surge_deploy_random_hex - fill out with 2 * nbytes hex digits read from
 * the kernel's random source (getrandom, /dev/urandom), NUL-terminated;
 * out must hold 2 * nbytes + 1 bytes. */
int surge_deploy_random_hex(char *out, size_t nbytes);

/* surge_deploy_rm_rf - remove path and, for a folder, everything under it
 * (symbolic links are removed, never followed). 0 when path is gone,
 * also when it did not exist; else -errno of the first failure. */
int surge_deploy_rm_rf(const char *path);

/* surge_deploy_dirname - copy the directory part of path into out (cap
 * bytes): "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/". Returns -ENAMETOOLONG
 * when it does not fit. */
int surge_deploy_dirname(const char *path, char *out, size_t cap);

/* surge_deploy_normalize_path - rewrite an absolute path in place without
 * "." components, ".." components (each removes the one before it; ".."
 * at the root stays at the root) and repeated slashes, by text alone:
 * "/a/b/../c/./d" -> "/a/c/d". For a path whose folders may not exist
 * yet; symbolic links are not followed. A relative path is left as is. */
void surge_deploy_normalize_path(char *path);

/* surge_deploy_find_in_path - the path of the executable program name
 * into out (cap bytes): name itself when it holds a '/', else the first
 * match in PATH (/usr/local/bin:/usr/bin:/bin when PATH is unset), for
 * callers that execve. 0, -ENOENT (not found or not executable),
 * -ENAMETOOLONG. */
int surge_deploy_find_in_path(const char *name, char *out, size_t cap);

#endif /* SURGE_DEPLOY_UTIL_H */
