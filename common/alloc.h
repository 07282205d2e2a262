/*
 * common/alloc.h - the allocation calls of the paths that handle peer
 * input (the codec, the server's sessions and assembly, the reservoir),
 * with a test-only fault injector.
 *
 * DESIGN. surge_malloc / surge_calloc / surge_realloc behave exactly as
 * malloc / calloc / realloc (free with free()). A test arms the injector
 * with surge_alloc_fail_nth(n): the n-th allocation made through these calls
 * from then on returns NULL, once. Looping n = 1, 2, ... until a run sees
 * no injected failure walks every allocation of a path, so each failure
 * branch runs (under AddressSanitizer, which also reports what leaks).
 * When the injector is not armed each call costs one relaxed atomic load
 * and a branch predicted not taken.
 *
 * Threads: the calls are thread-safe; the count is shared by all threads,
 * so a test that arms the injector should run one path at a time.
 */
#ifndef SURGE_COMMON_ALLOC_H
#define SURGE_COMMON_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *surge_malloc(size_t bytes);
void *surge_calloc(size_t n, size_t size);
void *surge_realloc(void *p, size_t bytes);

/* surge_alloc_fail_nth - (tests) make the n-th allocation through the calls
 * above (and surge_huge_alloc), counted from now, fail; 0 disarms. */
void surge_alloc_fail_nth(uint64_t n);

/* surge_alloc_failed - (tests) 1 when the armed failure has happened. */
int surge_alloc_failed(void);

/* surge_alloc_should_fail - 1 when this allocation must fail (for other
 * allocators, e.g. surge_huge_alloc, to take part). */
int surge_alloc_should_fail(void);

#endif /* SURGE_COMMON_ALLOC_H */
