/*
 * common/alloc.c - allocation calls with a test-only fault injector (see
 * alloc.h).
 */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "common/alloc.h"

/* Allocations left before the one that fails; 0 when not armed. */
static atomic_uint_fast64_t countdown;
static atomic_int failed;

static int
slow_should_fail(void)
{
    uint_fast64_t n = atomic_load(&countdown);
    while (n > 0) {
        if (atomic_compare_exchange_weak(&countdown, &n, n - 1)) {
            if (n == 1) {
                atomic_store(&failed, 1);
                return 1;
            }
            return 0;
        }
    }
    return 0;
}

int
surge_alloc_should_fail(void)
{
    if (__builtin_expect(
            atomic_load_explicit(&countdown, memory_order_relaxed) == 0, 1)) {
        return 0;
    }
    return slow_should_fail();
}

void
surge_alloc_fail_nth(uint64_t n)
{
    atomic_store(&failed, 0);
    atomic_store(&countdown, n);
}

int
surge_alloc_failed(void)
{
    return atomic_load(&failed);
}

void *
surge_malloc(size_t bytes)
{
    return surge_alloc_should_fail() ? NULL : malloc(bytes);
}

void *
surge_calloc(size_t n, size_t size)
{
    return surge_alloc_should_fail() ? NULL : calloc(n, size);
}

void *
surge_realloc(void *p, size_t bytes)
{
    return surge_alloc_should_fail() ? NULL : realloc(p, bytes);
}
