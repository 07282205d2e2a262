/* deploy/util.c - clock, file and randomness helpers of deploy/util.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "deploy/util.h"

void
surge_deploy_sleep(double seconds)
{
    if (!(seconds > 0)) {
        return;
    }
    struct timespec ts;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    /* One nanosleep: EINTR ends it so that a caught signal is seen at once. */
    nanosleep(&ts, NULL);
}

int
surge_deploy_read_file(const char *path, size_t cap, char **out, size_t *len)
{
    int rc = 0;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out_close;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        goto out_close;
    }
    if ((uint64_t)st.st_size > cap) {
        rc = -EFBIG;
        goto out_close;
    }
    /* Read up to cap + 1 bytes whatever stat said, since the file may grow
     * between the two calls; more than cap is still an error. */
    size_t size = (size_t)st.st_size;
    size_t have = 0;
    size_t room = size + 1;
    buf = malloc(room + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out_close;
    }
    for (;;) {
        ssize_t n = read(fd, buf + have, room - have);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            goto out_free;
        }
        if (n == 0) {
            break;
        }
        have += (size_t)n;
        if (have > cap) {
            rc = -EFBIG;
            goto out_free;
        }
        if (have == room) {
            size_t grow = room * 2 < cap + 1 ? room * 2 : cap + 1;
            if (grow <= room) {
                grow = room + 1;
            }
            char *nb = realloc(buf, grow + 1);
            if (nb == NULL) {
                rc = -ENOMEM;
                goto out_free;
            }
            buf = nb;
            room = grow;
        }
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    buf = NULL;
out_free:
    free(buf);
out_close:
    close(fd);
    return rc;
}

int
surge_deploy_mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0) {
        return -EINVAL;
    }
    if (len >= sizeof buf) {
        return -ENAMETOOLONG;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0') {
            continue;
        }
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
            return -errno;
        }
        buf[i] = saved;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        return -errno;
    }
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int
surge_deploy_random_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes == 0 || nbytes > sizeof raw) {
        return -EINVAL;
    }
    size_t have = 0;
    while (have < nbytes) {
        ssize_t n = getrandom(raw + have, nbytes - have, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        have += (size_t)n;
    }
    if (have < nbytes) {
        /* Old kernels without getrandom(2): the device gives the same. */
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            return -errno;
        }
        while (have < nbytes) {
            ssize_t n = read(fd, raw + have, nbytes - have);
            if (n <= 0) {
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                close(fd);
                return n < 0 ? -errno : -EIO;
            }
            have += (size_t)n;
        }
        close(fd);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
    return 0;
}

int
surge_deploy_dirname(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n;
    if (slash == NULL) {
        n = snprintf(out, cap, ".");
    } else if (slash == path) {
        n = snprintf(out, cap, "/");
    } else {
        n = snprintf(out, cap, "%.*s", (int)(slash - path), path);
    }
    return n < cap ? 0 : -ENAMETOOLONG;
}

void
surge_deploy_normalize_path(char *path)
{
    if (path[0] != '/') {
        return;
    }
    /* Components are copied down over the path: w never passes r. */
    size_t w = 0, r = 0;
    while (path[r] != '\0') {
        while (path[r] == '/') {
            r++;
        }
        size_t n = strcspn(path + r, "/");
        if (n == 0) {
            break;
        }
        if (n == 1 && path[r] == '.') {
            /* "." names the folder itself */
        } else if (n == 2 && path[r] == '.' && path[r + 1] == '.') {
            while (w > 0 && path[w - 1] != '/') {
                w--;
            }
            if (w > 0) {
                w--; /* the slash before the removed component */
            }
        } else {
            path[w++] = '/';
            memmove(path + w, path + r, n);
            w += n;
        }
        r += n;
    }
    if (w == 0) {
        path[w++] = '/';
    }
    path[w] = '\0';
}

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int rc = flag == FTW_DP ? rmdir(path) : unlink(path);
    return rc != 0 && errno != ENOENT ? -errno : 0;
}

int
surge_deploy_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    /* Depth first (the contents before their folder), at most 32 open
     * folders at once, never across a symbolic link. */
    int rc = nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS);
    if (rc == -1) {
        return errno == ENOENT ? 0 : -errno;
    }
    return rc;
}

int
surge_deploy_find_in_path(const char *name, char *out, size_t cap)
{
    if (strchr(name, '/') != NULL) {
        int w = snprintf(out, cap, "%s", name);
        if (w < 0 || (size_t)w >= cap) {
            return -ENAMETOOLONG;
        }
        return access(out, X_OK) == 0 ? 0 : -ENOENT;
    }
    const char *path = getenv("PATH");
    if (path == NULL || path[0] == '\0') {
        path = "/usr/local/bin:/usr/bin:/bin";
    }
    while (*path != '\0') {
        size_t n = strcspn(path, ":");
        int w = snprintf(out, cap, "%.*s/%s", (int)n, path, name);
        if (n > 0 && w > 0 && (size_t)w < cap && access(out, X_OK) == 0) {
            return 0;
        }
        path += n;
        if (*path == ':') {
            path++;
        }
    }
    return -ENOENT;
}
