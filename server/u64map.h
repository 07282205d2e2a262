/*
 * server/u64map.h - a small open-addressing hash map from uint64_t keys to
 * pointers, used by the server for its session, simulation and partial-step
 * tables.
 *
 * DESIGN. Linear probing with backward-shift deletion (no tombstones), so a
 * long-running server that inserts and removes steps forever never degrades.
 * Keys are mixed with the splitmix64 finalizer before probing, so dense keys
 * (steps 0, 1, 2, ...) spread out. The table grows (doubling) at 50% load;
 * it never shrinks, which keeps memory steady once the working set is known.
 *
 * Threads: none; the owner serializes access (the server's I/O thread).
 * Errors: insertion returns -ENOMEM when growing fails; the map is then
 * unchanged.
 */
#ifndef SURGE_SERVER_U64MAP_H
#define SURGE_SERVER_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct surge_u64map {
    uint64_t *keys; /* (cap) */
    void **vals;    /* (cap); NULL marks an empty slot */
    size_t cap;     /* slots, a power of two (0 before the first put) */
    size_t len;     /* occupied slots */
} surge_u64map;

/* surge_u64map_init - an empty map (no allocation until the first put). */
void surge_u64map_init(surge_u64map *m);
/* surge_u64map_fini - free the table (not the values). */
void surge_u64map_fini(surge_u64map *m);
/* surge_u64map_get - the value stored under key, or NULL. */
void *surge_u64map_get(const surge_u64map *m, uint64_t key);
/* surge_u64map_put - store val (not NULL) under key, replacing any previous
 * value. Returns 0 or -ENOMEM. */
int surge_u64map_put(surge_u64map *m, uint64_t key, void *val);
/* surge_u64map_del - remove key; returns the value it had, or NULL. */
void *surge_u64map_del(surge_u64map *m, uint64_t key);
/* surge_u64map_mix - the key mixer, also handy to hash byte strings. */
uint64_t surge_u64map_mix(uint64_t z);

#endif /* SURGE_SERVER_U64MAP_H */
