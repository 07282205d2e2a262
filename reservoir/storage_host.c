/*
 * reservoir/storage_host.c - the host storage: the pool is one mapping of
 * anonymous memory, backed by huge pages where the kernel allows and
 * pre-faulted (surge_huge_alloc); a put writes a slot, a batch is gathered
 * into the caller's arrays, both with streaming (non-temporal) stores when
 * they are big; the gather is spread over the caller's thread pool when it
 * passes one (surge_reservoir_get_batch_pool).
 */
#include "config.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_STREAM_STORES 1
#endif

#include "common/pool.h"
#include "reservoir/reservoir_impl.h"

/* A batch at least this big is written with non-temporal (streaming)
 * stores: it would not stay in the 32 MiB L3 anyway, and skipping the
 * read-for-ownership of each destination line makes the gather ~1.7x
 * faster than memcpy here (bench/reservoir). Smaller batches use memcpy and
 * stay in cache for the trainer that reads them next. */
#define STREAM_MIN_BATCH_BYTES ((size_t)8 << 20)
/* A write into a slot at least this big uses streaming stores too: a pool
 * slot is cold memory that a consumer's gather reads later, not the
 * producer, so reading each line before writing it is wasted (measured in
 * surge serve at 1 MiB samples: memcpy into the pool cost 2.3x the
 * streaming gather of the same bytes). */
#define STREAM_MIN_WRITE_BYTES ((size_t)256 << 10)

#ifdef HAVE_STREAM_STORES
/* Copy n bytes with streaming stores: memcpy up to a 16-byte aligned dst,
 * then 64 bytes per step, then memcpy the tail. SSE2 is in every x86-64. */
static void
copy_stream_sse2(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
    if (head > n) {
        head = n;
    }
    memcpy(dst, src, head);
    size_t i = head;
    for (; i + 64 <= n; i += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)(src + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(src + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(src + i + 32));
        __m128i d = _mm_loadu_si128((const __m128i *)(src + i + 48));
        _mm_stream_si128((__m128i *)(dst + i), a);
        _mm_stream_si128((__m128i *)(dst + i + 16), b);
        _mm_stream_si128((__m128i *)(dst + i + 32), c);
        _mm_stream_si128((__m128i *)(dst + i + 48), d);
    }
    memcpy(dst + i, src + i, n - i);
}

/* The same with 32-byte AVX2 registers, 128 bytes per step. */
__attribute__((target("avx2"))) static void
copy_stream_avx2(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t head = (32 - ((uintptr_t)dst & 31)) & 31;
    if (head > n) {
        head = n;
    }
    memcpy(dst, src, head);
    size_t i = head;
    for (; i + 128 <= n; i += 128) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
        __m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
        __m256i d = _mm256_loadu_si256((const __m256i *)(src + i + 96));
        _mm256_stream_si256((__m256i *)(dst + i), a);
        _mm256_stream_si256((__m256i *)(dst + i + 32), b);
        _mm256_stream_si256((__m256i *)(dst + i + 64), c);
        _mm256_stream_si256((__m256i *)(dst + i + 96), d);
    }
    memcpy(dst + i, src + i, n - i);
}
#endif

static int
host_create(surge_reservoir *r, char *err, size_t errlen)
{
#ifdef HAVE_STREAM_STORES
    __builtin_cpu_init();
    r->copy_stream =
        __builtin_cpu_supports("avx2") ? copy_stream_avx2 : copy_stream_sse2;
#endif
    size_t n = r->nslots;
    r->pool_mapped = n * r->slot_bytes;
    /* The pool fills from its start (res_reset_state), so it can take
     * samples while the rest is pre-faulted behind them. */
    r->pool =
        surge_huge_alloc_background(r->pool_mapped, "reservoir", &r->prefault);
    if (r->pool == NULL) {
        surge_set_err(err, errlen,
                      "reservoir.capacity_bytes: cannot map %zu bytes for %zu "
                      "slots: out of memory",
                      n * r->slot_bytes, n);
        return -ENOMEM;
    }
    return 0;
}

static void
host_destroy(surge_reservoir *r)
{
    surge_prefault_stop(&r->prefault);
    surge_huge_free(r->pool, r->pool_mapped);
    r->pool = NULL;
}

static void
host_write(surge_reservoir *r, void *dst, const void *src, size_t n)
{
    if (r->copy_stream != NULL && n >= STREAM_MIN_WRITE_BYTES) {
        r->copy_stream(dst, src, n);
    } else {
        memcpy(dst, src, n);
    }
}

static void
host_commit_fence(surge_reservoir *r)
{
    (void)r;
#ifdef HAVE_STREAM_STORES
    /* Streaming stores of slot_write are weakly ordered: make them visible
     * before the slot is published to consumers. */
    _mm_sfence();
#endif
}

/* One gather, cut into tasks of consecutive rows for a thread pool. */
struct gather_job {
    surge_reservoir *r;
    const uint32_t *rows;
    size_t n, ntasks;
    uint8_t *in8, *out8;
    int stream; /* streaming stores for the outputs */
};

static void
gather_task(void *arg, size_t task)
{
    const struct gather_job *jb = arg;
    surge_reservoir *r = jb->r;
    const size_t slot_bytes = r->slot_bytes;
    const size_t in_bytes = r->in_bytes, out_bytes = r->out_bytes;
    const uint8_t *pool = r->pool;
    size_t i0, i1;
    surge_pool_split(jb->n, jb->ntasks, task, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        const uint8_t *src = pool + (size_t)jb->rows[i] * slot_bytes;
        if (in_bytes > 0) {
            memcpy(jb->in8 + i * in_bytes, src, in_bytes);
        }
        if (out_bytes == 0) {
            continue;
        }
        if (jb->stream) {
            r->copy_stream(jb->out8 + i * out_bytes, src + in_bytes, out_bytes);
        } else {
            memcpy(jb->out8 + i * out_bytes, src + in_bytes, out_bytes);
        }
    }
#ifdef HAVE_STREAM_STORES
    if (jb->stream) {
        /* Streaming stores are weakly ordered: fence them (on the thread
         * that made them) before the batch goes to another thread or a
         * device. */
        _mm_sfence();
    }
#endif
}

/* Bytes a gather task copies at least: below that, waking another thread
 * costs more than it saves. */
#define GATHER_TASK_MIN_BYTES ((size_t)64 << 10)

static void
host_gather(surge_reservoir *r, const uint32_t *rows, size_t n, float *inputs,
            float *outputs, surge_pool *pool)
{
    struct gather_job jb = {
        .r = r,
        .rows = rows,
        .n = n,
        .in8 = (uint8_t *)inputs,
        .out8 = (uint8_t *)outputs,
        .stream = r->copy_stream != NULL &&
                  n * r->sample_bytes >= STREAM_MIN_BATCH_BYTES,
    };
    /* Two tasks per thread evens out rows that miss in cache; the copy's
     * result does not depend on how it is cut. */
    size_t bytes = n * r->sample_bytes;
    size_t ntasks = 2 * (size_t)surge_pool_threads(pool);
    if (ntasks > bytes / GATHER_TASK_MIN_BYTES) {
        ntasks = bytes / GATHER_TASK_MIN_BYTES;
    }
    if (ntasks > n) {
        ntasks = n;
    }
    jb.ntasks = ntasks > 0 ? ntasks : 1;
    surge_pool_run(pool, jb.ntasks, gather_task, &jb);
}

const struct res_storage_ops res_storage_host = {
    .name = "host",
    .create = host_create,
    .destroy = host_destroy,
    .write = host_write,
    .commit_fence = host_commit_fence,
    .gather = host_gather,
};
