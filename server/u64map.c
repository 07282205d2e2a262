/*
 * server/u64map.c - open-addressing uint64 -> pointer map (see u64map.h).
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "common/rng.h"
#include "server/u64map.h"

uint64_t
surge_u64map_mix(uint64_t z)
{
    return surge_mix64(z);
}

void
surge_u64map_init(surge_u64map *m)
{
    m->keys = NULL;
    m->vals = NULL;
    m->cap = 0;
    m->len = 0;
}

void
surge_u64map_fini(surge_u64map *m)
{
    free(m->keys);
    free(m->vals);
    surge_u64map_init(m);
}

static size_t
find_slot(const surge_u64map *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)surge_u64map_mix(key) & mask;
    while (m->vals[i] != NULL && m->keys[i] != key) {
        i = (i + 1) & mask;
    }
    return i;
}

void *
surge_u64map_get(const surge_u64map *m, uint64_t key)
{
    if (m->cap == 0) {
        return NULL;
    }
    return m->vals[find_slot(m, key)];
}

static int
grow(surge_u64map *m)
{
    size_t ncap = m->cap == 0 ? 16 : m->cap * 2;
    surge_u64map n;
    n.keys = surge_calloc(ncap, sizeof *n.keys);
    n.vals = surge_calloc(ncap, sizeof *n.vals);
    if (n.keys == NULL || n.vals == NULL) {
        free(n.keys);
        free(n.vals);
        return -ENOMEM;
    }
    n.cap = ncap;
    n.len = m->len;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->vals[i] != NULL) {
            size_t j = find_slot(&n, m->keys[i]);
            n.keys[j] = m->keys[i];
            n.vals[j] = m->vals[i];
        }
    }
    free(m->keys);
    free(m->vals);
    *m = n;
    return 0;
}

int
surge_u64map_put(surge_u64map *m, uint64_t key, void *val)
{
    if (val == NULL) {
        return -EINVAL;
    }
    if ((m->len + 1) * 2 > m->cap) {
        int rc = grow(m);
        if (rc < 0) {
            return rc;
        }
    }
    size_t i = find_slot(m, key);
    if (m->vals[i] == NULL) {
        m->len++;
    }
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

void *
surge_u64map_del(surge_u64map *m, uint64_t key)
{
    if (m->cap == 0) {
        return NULL;
    }
    size_t mask = m->cap - 1;
    size_t i = find_slot(m, key);
    void *old = m->vals[i];
    if (old == NULL) {
        return NULL;
    }
    /* Backward-shift deletion: move later members of the probe run into
     * the hole when their home slot does not lie between hole and them. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->vals[j] == NULL) {
            break;
        }
        size_t home = (size_t)surge_u64map_mix(m->keys[j]) & mask;
        int between =
            (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!between) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            i = j;
        }
    }
    m->vals[i] = NULL;
    m->len--;
    return old;
}
