/*
 * server/shmring.h - a ring of fixed-size slots in POSIX shared memory,
 * shared with one consumer process on the same host (the external
 * consumer's fast path: server/external.c, docs/protocol.md "Shared-memory
 * transfer").
 *
 * DESIGN. The server creates the object under a random name (owner-only,
 * O_EXCL), sizes it, maps it and touches every page once (page faults on
 * these machines cost more than the copies). The consumer opens the name
 * and maps it; once it says so, the server removes the name
 * (surge_shm_ring_unlink), so nothing is left in /dev/shm when either side
 * dies afterwards. A slot is held from surge_shm_ring_acquire until
 * surge_shm_ring_release: the server gathers a batch into a held slot and
 * releases it when the consumer acked the batch. The ring checks every
 * slot index it is given (they come back from the peer).
 *
 * Threads: a ring is used by one thread (the external consumer's).
 */
#ifndef SURGE_SERVER_SHMRING_H
#define SURGE_SERVER_SHMRING_H

#include <stddef.h>
#include <stdint.h>

#define SURGE_SHM_RING_MAX_SLOTS 32

typedef struct surge_shm_ring surge_shm_ring;

/* surge_shm_ring_create - a new ring of slots x slot_bytes (slot_bytes a
 * multiple of the page size; 1 <= slots <= SURGE_SHM_RING_MAX_SLOTS),
 * mapped and pre-faulted, under a fresh name "/surge-<pid>-<random>".
 * *out is set on success. 0, -EINVAL (sizes), or -errno. */
int surge_shm_ring_create(surge_shm_ring **out, uint32_t slots,
                          size_t slot_bytes);

/* surge_shm_ring_destroy - unmap, remove the name if still there, free;
 * sets *r to NULL. NULL or *r NULL is a no-op. */
void surge_shm_ring_destroy(surge_shm_ring **r);

/* surge_shm_ring_name - the name to shm_open ("" once unlinked). */
const char *surge_shm_ring_name(const surge_shm_ring *r);

/* surge_shm_ring_unlink - remove the name (the mapping stays). Idempotent. */
void surge_shm_ring_unlink(surge_shm_ring *r);

uint32_t surge_shm_ring_slots(const surge_shm_ring *r);
size_t surge_shm_ring_slot_bytes(const surge_shm_ring *r);
/* surge_shm_ring_bytes - slots x slot_bytes: the memory the ring holds. */
size_t surge_shm_ring_bytes(const surge_shm_ring *r);

/* surge_shm_ring_free - slots not held now. */
uint32_t surge_shm_ring_free(const surge_shm_ring *r);

/* surge_shm_ring_acquire - hold a free slot: its index, or -EAGAIN when
 * every slot is held. Free slots are taken lowest index first. */
int surge_shm_ring_acquire(surge_shm_ring *r);

/* surge_shm_ring_release - give back slot (held). 0, or -EINVAL (out of
 * range) or -EALREADY (not held): the ring is unchanged. */
int surge_shm_ring_release(surge_shm_ring *r, int64_t slot);

/* surge_shm_ring_release_all - give back every slot. */
void surge_shm_ring_release_all(surge_shm_ring *r);

/* surge_shm_ring_slot - the start of slot (0 <= slot < slots), page
 * aligned; NULL when out of range. */
unsigned char *surge_shm_ring_slot(surge_shm_ring *r, int64_t slot);

#endif /* SURGE_SERVER_SHMRING_H */
