/*
 * trainer/safetensors.h - reading and writing safetensors files, atomically.
 *
 * Format (https://huggingface.co/docs/safetensors): u64 little-endian N,
 * then N bytes of UTF-8 JSON: {"__metadata__": {str: str}, name: {"dtype":
 * "F32", "shape": [d0, d1], "data_offsets": [begin, end]}, ...}, then the
 * data section; offsets are relative to its start. We pad the header with
 * spaces so the data starts 8-byte aligned, as the reference writer does.
 * Internal to trainer/ (the small utilities here, atomic file write and
 * CRC-32C, are candidates for common/).
 */
#ifndef SURGE_TRAINER_SAFETENSORS_H
#define SURGE_TRAINER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

enum st_dtype { ST_F32 = 0, ST_F64 = 1, ST_U8 = 2 };

/* Header bigger than this is refused before allocating (the reference
 * implementation's limit is 100 MB too). */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
#define ST_MAX_DIMS 4

struct st_tensor {
    const char *name; /* tensor key */
    int dtype;        /* enum st_dtype */
    int ndim;         /* 0..ST_MAX_DIMS */
    uint64_t shape[ST_MAX_DIMS];
    const void *data; /* bytes = product(shape) * dtype size */
};

/* st_write_atomic - write tensors (in this order) and metadata (n_meta
 * key/value pairs, meta[2i] key, meta[2i+1] value; both escaped) to path via
 * a temporary file in the same directory, fsync, rename, fsync of the
 * directory. When crc_key is not NULL, adds __metadata__[crc_key] = the
 * CRC-32C of the data section as 8 hex digits. 0 or -errno, with err set. */
int st_write_atomic(const char *path, const struct st_tensor *tensors,
                    int n_tensors, const char *const *meta, int n_meta,
                    const char *crc_key, char *err, size_t errlen);

/* A file read whole and validated. */
struct st_file {
    uint8_t *buf;        /* the whole file (owned) */
    size_t size;         /* bytes in buf */
    const uint8_t *data; /* data section inside buf */
    size_t data_len;     /* its length */
    void *root;          /* json_t * header (owned) */
};

/* st_read - read path whole (its size from fstat, not from the file's
 * contents), validate the header: length within the file and the limit,
 * JSON object, __metadata__ only strings, every tensor with a known dtype,
 * shape of non-negative ints, data_offsets inside the data section,
 * matching the shape, not overlapping. When crc_key names a metadata entry,
 * the data section's CRC-32C must match it (the entry is then required).
 * 0 or -errno / SURGE_EPROTO with err naming the file and the problem. */
int st_read(const char *path, struct st_file *f, const char *crc_key, char *err,
            size_t errlen);
void st_close(struct st_file *f);

/* st_meta - metadata value for key, or NULL. Lives as long as f. */
const char *st_meta(const struct st_file *f, const char *key);

/* st_meta_int - metadata value for key as a decimal integer in [lo, hi]:
 * 0 and *out, or -1 when missing, not an integer or out of range. */
int st_meta_int(const struct st_file *f, const char *key, long long lo,
                long long hi, long long *out);

/* st_get - copy tensor name into dst after checking its dtype and shape
 * (ndim dims in shape); dst NULL only checks. SURGE_EPROTO with err when
 * missing or different. */
int st_get(const struct st_file *f, const char *name, int dtype, int ndim,
           const uint64_t *shape, void *dst, char *err, size_t errlen);

/* st_get_bytes - the optional 1-D U8 tensor name (an opaque blob): *len
 * is its length, 0 when the file has no such tensor. When data is not NULL
 * and the tensor is not empty, *data is a malloc'ed copy that the caller
 * frees; otherwise *data is NULL. 0, st_get's error or -ENOMEM, with err
 * saying why. */
int st_get_bytes(const struct st_file *f, const char *name, void **data,
                 uint64_t *len, char *err, size_t errlen);

/* st_has - whether the file holds tensor name. */
int st_has(const struct st_file *f, const char *name);

/* st_count_tensors - how many tensors the header declares. */
int st_count_tensors(const struct st_file *f);

/* crc32c - CRC-32C (Castagnoli) of n bytes continuing from crc (start
 * with 0). Hardware instruction when the CPU has SSE4.2. */
uint32_t st_crc32c(uint32_t crc, const void *p, size_t n);

#endif /* SURGE_TRAINER_SAFETENSORS_H */
