/*
 * trainer/safetensors.c - safetensors reader/writer, atomic file write and
 * CRC-32C (see safetensors.h).
 *
 * The reader trusts nothing in the file: the header length is checked
 * against the file's real size and ST_MAX_HEADER before jansson sees it,
 * every tensor's offsets against the data section and its shape, and
 * tensors may not overlap. Only then does a caller copy data out.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include <surge/error.h>

#include "common/util.h"
#include "trainer/safetensors.h"

static const char *const dtype_names[] = {"F32", "F64", "U8"};
static const size_t dtype_sizes[] = {4, 8, 1};

/* CRC-32C, reflected polynomial 0x82F63B78. */
static uint32_t
crc_soft(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n-- > 0) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("sse4.2"))) static uint32_t
crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = (uint32_t)~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (n-- > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    }
    return ~c32;
}
#endif

uint32_t
st_crc32c(uint32_t crc, const void *p, size_t n)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (__builtin_cpu_supports("sse4.2")) {
        return crc_hw(crc, p, n);
    }
#endif
    return crc_soft(crc, p, n);
}

/* A growable string for the JSON header. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void
sb_reserve(struct sbuf *s, size_t extra)
{
    if (s->oom || s->len + extra + 1 <= s->cap) {
        return;
    }
    size_t cap = s->cap > 0 ? s->cap : 1024;
    while (cap < s->len + extra + 1) {
        cap *= 2;
    }
    char *p = realloc(s->p, cap);
    if (p == NULL) {
        s->oom = 1;
        return;
    }
    s->p = p;
    s->cap = cap;
}

static void sb_printf(struct sbuf *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
sb_printf(struct sbuf *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        s->oom = 1;
        return;
    }
    sb_reserve(s, (size_t)n);
    if (s->oom) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, s->cap - s->len, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

/* Append str as a JSON string literal. */
static void
sb_json_string(struct sbuf *s, const char *str)
{
    sb_printf(s, "\"");
    for (const unsigned char *c = (const unsigned char *)str; *c; c++) {
        if (*c == '"' || *c == '\\') {
            sb_printf(s, "\\%c", *c);
        } else if (*c < 0x20) {
            sb_printf(s, "\\u%04x", *c);
        } else {
            sb_printf(s, "%c", *c);
        }
    }
    sb_printf(s, "\"");
}

static size_t
tensor_bytes(const struct st_tensor *t)
{
    size_t n = dtype_sizes[t->dtype];
    for (int d = 0; d < t->ndim; d++) {
        n *= (size_t)t->shape[d];
    }
    return n;
}

/* fsync the directory holding path so the rename itself is durable. */
static int
sync_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        int len = (int)(slash - path);
        if ((size_t)len >= sizeof dir) {
            return -ENAMETOOLONG;
        }
        snprintf(dir, sizeof dir, "%.*s", len, path);
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    /* Some file systems refuse fsync on directories; the data is safe. */
    return rc == -EINVAL ? 0 : rc;
}

int
st_write_atomic(const char *path, const struct st_tensor *tensors,
                int n_tensors, const char *const *meta, int n_meta,
                const char *crc_key, char *err, size_t errlen)
{
    struct sbuf s = {0};
    char tmp[4096];
    int fd = -1;
    int rc = 0;

    uint32_t crc = 0;
    if (crc_key != NULL) {
        for (int i = 0; i < n_tensors; i++) {
            crc = st_crc32c(crc, tensors[i].data, tensor_bytes(&tensors[i]));
        }
    }
    sb_printf(&s, "{\"__metadata__\":{");
    for (int i = 0; i < n_meta; i++) {
        sb_printf(&s, i > 0 ? "," : "");
        sb_json_string(&s, meta[2 * i]);
        sb_printf(&s, ":");
        sb_json_string(&s, meta[2 * i + 1]);
    }
    if (crc_key != NULL) {
        sb_printf(&s, n_meta > 0 ? "," : "");
        sb_json_string(&s, crc_key);
        sb_printf(&s, ":\"%08x\"", (unsigned)crc);
    }
    sb_printf(&s, "}");
    size_t off = 0;
    for (int i = 0; i < n_tensors; i++) {
        const struct st_tensor *t = &tensors[i];
        size_t bytes = tensor_bytes(t);
        sb_printf(&s, ",");
        sb_json_string(&s, t->name);
        sb_printf(&s, ":{\"dtype\":\"%s\",\"shape\":[", dtype_names[t->dtype]);
        for (int d = 0; d < t->ndim; d++) {
            sb_printf(&s, "%s%llu", d > 0 ? "," : "",
                      (unsigned long long)t->shape[d]);
        }
        sb_printf(&s, "],\"data_offsets\":[%zu,%zu]}", off, off + bytes);
        off += bytes;
    }
    sb_printf(&s, "}");
    while (!s.oom && (8 + s.len) % 8 != 0) {
        sb_printf(&s, " ");
    }
    if (s.oom) {
        rc = -ENOMEM;
        surge_set_err(err, errlen, "%s: out of memory for the header", path);
        goto out;
    }
    if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) {
        rc = -ENAMETOOLONG;
        surge_set_err(err, errlen, "%s: path too long", path);
        goto out;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = -errno;
        surge_set_err(err, errlen, "%s: cannot create a temporary file: %s",
                      path, strerror(errno));
        goto out;
    }
    (void)fchmod(fd, 0644);
    uint8_t len8[8];
    for (int b = 0; b < 8; b++) {
        len8[b] = (uint8_t)((uint64_t)s.len >> (8 * b));
    }
    rc = surge_write_all(fd, len8, sizeof len8);
    if (rc == 0) {
        rc = surge_write_all(fd, s.p, s.len);
    }
    for (int i = 0; i < n_tensors && rc == 0; i++) {
        rc = surge_write_all(fd, tensors[i].data, tensor_bytes(&tensors[i]));
    }
    if (rc == 0 && fsync(fd) != 0) {
        rc = -errno;
    }
    if (close(fd) != 0 && rc == 0) {
        rc = -errno;
    }
    fd = -1;
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -errno;
    }
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: write failed: %s", path, strerror(-rc));
        unlink(tmp);
        goto out;
    }
    rc = sync_dir(path);
    if (rc != 0) {
        surge_set_err(err, errlen, "%s: fsync of its directory failed: %s",
                      path, strerror(-rc));
    }
out:
    free(s.p);
    return rc;
}

void
st_close(struct st_file *f)
{
    if (f->root != NULL) {
        json_decref(f->root);
    }
    free(f->buf);
    memset(f, 0, sizeof *f);
}

struct span {
    uint64_t begin, end;
};

static int
span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->begin < y->begin ? -1 : (x->begin > y->begin ? 1 : 0);
}

static int
dtype_parse(const char *s)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(s, dtype_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

/* Validate one tensor entry; fills its span. */
static int
check_entry(const char *path, const char *name, json_t *v, size_t data_len,
            struct span *sp, char *err, size_t errlen)
{
    json_t *dt = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(shape) ||
        !json_is_array(offs) || json_array_size(offs) != 2) {
        surge_set_err(err, errlen,
                      "%s: tensor '%.64s' needs dtype, shape and data_offsets",
                      path, name);
        return SURGE_EPROTO;
    }
    int dtype = dtype_parse(json_string_value(dt));
    if (dtype < 0) {
        surge_set_err(err, errlen,
                      "%s: tensor '%.64s': unsupported dtype '%.16s'", path,
                      name, json_string_value(dt));
        return SURGE_EPROTO;
    }
    if (json_array_size(shape) > ST_MAX_DIMS) {
        surge_set_err(err, errlen,
                      "%s: tensor '%.64s': more than %d dimensions", path, name,
                      ST_MAX_DIMS);
        return SURGE_EPROTO;
    }
    uint64_t bytes = dtype_sizes[dtype];
    for (size_t d = 0; d < json_array_size(shape); d++) {
        json_t *e = json_array_get(shape, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0 ||
            (uint64_t)json_integer_value(e) > data_len) {
            surge_set_err(err, errlen, "%s: tensor '%.64s': bad shape", path,
                          name);
            return SURGE_EPROTO;
        }
        uint64_t dim = (uint64_t)json_integer_value(e);
        if (dim != 0 && bytes > (uint64_t)data_len / dim) {
            bytes = (uint64_t)data_len + 1; /* too big, caught below */
        } else {
            bytes *= dim;
        }
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) ||
        json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b) ||
        (uint64_t)json_integer_value(e) > data_len) {
        surge_set_err(
            err, errlen,
            "%s: tensor '%.64s': data_offsets outside the data section "
            "(%zu bytes)",
            path, name, data_len);
        return SURGE_EPROTO;
    }
    sp->begin = (uint64_t)json_integer_value(b);
    sp->end = (uint64_t)json_integer_value(e);
    if (sp->end - sp->begin != bytes) {
        surge_set_err(
            err, errlen,
            "%s: tensor '%.64s': %llu bytes of data for a shape of %llu", path,
            name, (unsigned long long)(sp->end - sp->begin),
            (unsigned long long)bytes);
        return SURGE_EPROTO;
    }
    return 0;
}

int
st_read(const char *path, struct st_file *f, const char *crc_key, char *err,
        size_t errlen)
{
    struct stat stb;
    struct span *spans = NULL;
    int rc = 0;
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        surge_set_err(err, errlen, "%s: %s", path, strerror(errno));
        return rc;
    }
    if (fstat(fd, &stb) != 0) {
        rc = -errno;
        surge_set_err(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(stb.st_mode) || stb.st_size < 8) {
        rc = SURGE_EPROTO;
        surge_set_err(err, errlen, "%s: not a safetensors file (too short)",
                      path);
        goto fail;
    }
    f->size = (size_t)stb.st_size;
    f->buf = malloc(f->size);
    if (f->buf == NULL) {
        rc = -ENOMEM;
        surge_set_err(err, errlen, "%s: out of memory for %zu bytes", path,
                      f->size);
        goto fail;
    }
    size_t got = 0;
    while (got < f->size) {
        ssize_t r = read(fd, f->buf + got, f->size - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            rc = r < 0 ? -errno : SURGE_EPROTO;
            surge_set_err(err, errlen, "%s: read failed: %s", path,
                          r < 0 ? strerror(errno)
                                : "file shrank while reading");
            goto fail;
        }
        got += (size_t)r;
    }
    close(fd);
    fd = -1;

    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--) {
        hlen = (hlen << 8) | f->buf[b];
    }
    if (hlen <= ST_MAX_HEADER && hlen >= 2 && hlen > f->size - 8 &&
        f->buf[8] == '{') {
        /* A plausible header longer than the file: a write cut short. */
        rc = SURGE_EPROTO;
        surge_set_err(err, errlen,
                      "%s: truncated: %zu of at least %llu bytes (the header "
                      "alone is %llu)",
                      path, f->size, (unsigned long long)(8 + hlen),
                      (unsigned long long)hlen);
        goto fail;
    }
    if (hlen > ST_MAX_HEADER || hlen > f->size - 8 || hlen < 2) {
        rc = SURGE_EPROTO;
        surge_set_err(
            err, errlen,
            "%s: not a safetensors file (header length %llu, file %zu "
            "bytes)",
            path, (unsigned long long)hlen, f->size);
        goto fail;
    }
    f->data = f->buf + 8 + hlen;
    f->data_len = f->size - 8 - (size_t)hlen;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)f->buf + 8, (size_t)hlen,
                              JSON_REJECT_DUPLICATES, &jerr);
    f->root = root;
    if (root == NULL || !json_is_object(root)) {
        rc = SURGE_EPROTO;
        surge_set_err(err, errlen, "%s: header is not a JSON object: %s", path,
                      root == NULL ? jerr.text : "wrong type");
        goto fail;
    }
    size_t n = json_object_size(root);
    spans = calloc(n + 1, sizeof *spans);
    if (spans == NULL) {
        rc = -ENOMEM;
        surge_set_err(err, errlen, "%s: out of memory", path);
        goto fail;
    }
    size_t ns = 0;
    const char *key;
    json_t *v;
    /* A file cut short (a copy or a write that did not finish) has a whole
     * header whose tensors reach past the end: say that, with the sizes,
     * rather than what the first tensor that no longer fits looks like. */
    uint64_t need = 0;
    json_object_foreach(root, key, v)
    {
        json_t *e = json_array_get(json_object_get(v, "data_offsets"), 1);
        if (json_is_integer(e) && json_integer_value(e) > 0 &&
            (uint64_t)json_integer_value(e) > need) {
            need = (uint64_t)json_integer_value(e);
        }
    }
    if (need > f->data_len && need <= ((uint64_t)1 << 40)) {
        rc = SURGE_EPROTO;
        surge_set_err(err, errlen, "%s: truncated: %zu of %llu bytes", path,
                      f->size,
                      (unsigned long long)(f->size - f->data_len + need));
        goto fail;
    }
    json_object_foreach(root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                rc = SURGE_EPROTO;
                surge_set_err(err, errlen, "%s: __metadata__ is not an object",
                              path);
                goto fail;
            }
            const char *mk;
            json_t *mv;
            json_object_foreach(v, mk, mv)
            {
                if (!json_is_string(mv)) {
                    rc = SURGE_EPROTO;
                    surge_set_err(err, errlen,
                                  "%s: __metadata__ '%.64s' is not a string",
                                  path, mk);
                    goto fail;
                }
            }
            continue;
        }
        rc = check_entry(path, key, v, f->data_len, &spans[ns], err, errlen);
        if (rc != 0) {
            goto fail;
        }
        ns++;
    }
    qsort(spans, ns, sizeof *spans, span_cmp);
    for (size_t i = 1; i < ns; i++) {
        if (spans[i].begin < spans[i - 1].end) {
            rc = SURGE_EPROTO;
            surge_set_err(err, errlen,
                          "%s: tensors overlap in the data section", path);
            goto fail;
        }
    }
    if (crc_key != NULL) {
        const char *want = st_meta(f, crc_key);
        char have[16];
        snprintf(have, sizeof have, "%08x",
                 (unsigned)st_crc32c(0, f->data, f->data_len));
        if (want == NULL) {
            rc = SURGE_EPROTO;
            surge_set_err(err, errlen, "%s: no checksum (%s) in the header",
                          path, crc_key);
            goto fail;
        }
        if (strcmp(want, have) != 0) {
            rc = SURGE_EPROTO;
            surge_set_err(err, errlen,
                          "%s: data is corrupt (CRC-32C %s, header says %.16s)",
                          path, have, want);
            goto fail;
        }
    }
    free(spans);
    return 0;

fail:
    free(spans);
    if (fd >= 0) {
        close(fd);
    }
    st_close(f);
    return rc;
}

const char *
st_meta(const struct st_file *f, const char *key)
{
    json_t *m = json_object_get(f->root, "__metadata__");
    json_t *v = m != NULL ? json_object_get(m, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

int
st_meta_int(const struct st_file *f, const char *key, long long lo,
            long long hi, long long *out)
{
    int64_t v;
    if (surge_parse_int64(st_meta(f, key), &v) != 0 || v < lo || v > hi) {
        return -1;
    }
    *out = (long long)v;
    return 0;
}

int
st_get_bytes(const struct st_file *f, const char *name, void **data,
             uint64_t *len, char *err, size_t errlen)
{
    *len = 0;
    if (data != NULL) {
        *data = NULL;
    }
    if (!st_has(f, name)) {
        return 0;
    }
    json_t *e = json_object_get(f->root, name);
    uint64_t n = (uint64_t)json_integer_value(
        json_array_get(json_object_get(e, "shape"), 0));
    int rc = st_get(f, name, ST_U8, 1, &n, NULL, err, errlen);
    if (rc != 0) {
        return rc;
    }
    if (data != NULL && n > 0) {
        void *p = malloc((size_t)n);
        if (p == NULL) {
            surge_set_err(err, errlen, "out of memory");
            return -ENOMEM;
        }
        (void)st_get(f, name, ST_U8, 1, &n, p, NULL, 0);
        *data = p;
    }
    *len = n;
    return 0;
}

int
st_has(const struct st_file *f, const char *name)
{
    return strcmp(name, "__metadata__") != 0 &&
           json_object_get(f->root, name) != NULL;
}

int
st_count_tensors(const struct st_file *f)
{
    size_t n = json_object_size(f->root);
    return (int)(json_object_get(f->root, "__metadata__") != NULL ? n - 1 : n);
}

int
st_get(const struct st_file *f, const char *name, int dtype, int ndim,
       const uint64_t *shape, void *dst, char *err, size_t errlen)
{
    json_t *v = st_has(f, name) ? json_object_get(f->root, name) : NULL;
    if (v == NULL) {
        surge_set_err(err, errlen, "tensor '%.64s' is missing", name);
        return SURGE_EPROTO;
    }
    /* st_read validated the entry's structure. */
    json_t *sh = json_object_get(v, "shape");
    int ok =
        dtype_parse(json_string_value(json_object_get(v, "dtype"))) == dtype &&
        json_array_size(sh) == (size_t)ndim;
    for (int d = 0; ok && d < ndim; d++) {
        ok = (uint64_t)json_integer_value(json_array_get(sh, (size_t)d)) ==
             shape[d];
    }
    if (!ok) {
        char want[96];
        size_t used = 0;
        want[0] = '\0';
        for (int d = 0; d < ndim && used < sizeof want; d++) {
            int w = snprintf(want + used, sizeof want - used, "%s%llu",
                             d > 0 ? ", " : "", (unsigned long long)shape[d]);
            used += w > 0 ? (size_t)w : 0;
        }
        surge_set_err(err, errlen, "tensor '%.64s': expected %s (%s)", name,
                      dtype_names[dtype], want);
        return SURGE_EPROTO;
    }
    json_t *offs = json_object_get(v, "data_offsets");
    uint64_t b = (uint64_t)json_integer_value(json_array_get(offs, 0));
    uint64_t e = (uint64_t)json_integer_value(json_array_get(offs, 1));
    if (dst != NULL && e > b) {
        memcpy(dst, f->data + b, (size_t)(e - b));
    }
    return 0;
}
