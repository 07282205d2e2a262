/*
 * tests/unit/server/test_shmring.c - the shared-memory ring of the external
 * consumer (server/shmring.c): sizes refused, the object owner-only under
 * its name and of the right size, a second mapping (the consumer's) sees
 * what the server writes, slots held and given back with every bad index
 * refused, the name gone after unlink and destroy.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/shmring.h"

static void
test_sizes(void **st)
{
    (void)st;
    surge_shm_ring *r = NULL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    assert_int_equal(surge_shm_ring_create(&r, 0, page), -EINVAL);
    assert_int_equal(
        surge_shm_ring_create(&r, SURGE_SHM_RING_MAX_SLOTS + 1, page), -EINVAL);
    assert_int_equal(surge_shm_ring_create(&r, 2, 0), -EINVAL);
    assert_int_equal(surge_shm_ring_create(&r, 2, page + 1), -EINVAL);
    assert_null(r);
    surge_shm_ring_destroy(&r); /* NULL: no-op */
    surge_shm_ring_destroy(NULL);
}

static void
test_slots(void **st)
{
    (void)st;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    surge_shm_ring *r = NULL;
    assert_int_equal(surge_shm_ring_create(&r, 3, 2 * page), 0);
    assert_int_equal(surge_shm_ring_slots(r), 3);
    assert_int_equal(surge_shm_ring_slot_bytes(r), 2 * page);
    assert_int_equal(surge_shm_ring_bytes(r), 6 * page);
    assert_int_equal(surge_shm_ring_free(r), 3);

    /* The consumer's view: open the name, owner-only, the right size. */
    char name[64];
    snprintf(name, sizeof name, "%s", surge_shm_ring_name(r));
    assert_int_equal(strncmp(name, "/surge-", 7), 0);
    int fd = shm_open(name, O_RDWR, 0);
    assert_true(fd >= 0);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal((size_t)sb.st_size, 6 * page);
    unsigned char *view =
        mmap(NULL, 6 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(view != MAP_FAILED);
    close(fd);

    /* Slots: lowest free first, all held, then -EAGAIN. */
    assert_int_equal(surge_shm_ring_acquire(r), 0);
    assert_int_equal(surge_shm_ring_acquire(r), 1);
    assert_int_equal(surge_shm_ring_acquire(r), 2);
    assert_int_equal(surge_shm_ring_acquire(r), -EAGAIN);
    assert_int_equal(surge_shm_ring_free(r), 0);
    unsigned char *s1 = surge_shm_ring_slot(r, 1);
    assert_ptr_equal(s1, surge_shm_ring_slot(r, 0) + 2 * page);
    assert_null(surge_shm_ring_slot(r, 3));
    assert_null(surge_shm_ring_slot(r, -1));
    memset(s1, 0xab, 2 * page);
    assert_int_equal(view[2 * page], 0xab);
    assert_int_equal(view[4 * page - 1], 0xab);
    assert_int_equal(view[4 * page], 0);

    /* Indices from the peer: out of range, not held, twice. */
    assert_int_equal(surge_shm_ring_release(r, 3), -EINVAL);
    assert_int_equal(surge_shm_ring_release(r, -1), -EINVAL);
    assert_int_equal(surge_shm_ring_release(r, INT64_MAX), -EINVAL);
    assert_int_equal(surge_shm_ring_release(r, 1), 0);
    assert_int_equal(surge_shm_ring_release(r, 1), -EALREADY);
    assert_int_equal(surge_shm_ring_free(r), 1);
    assert_int_equal(surge_shm_ring_acquire(r), 1);
    surge_shm_ring_release_all(r);
    assert_int_equal(surge_shm_ring_free(r), 3);

    /* Unlink: the name goes, both mappings stay. */
    surge_shm_ring_unlink(r);
    assert_string_equal(surge_shm_ring_name(r), "");
    assert_true(shm_open(name, O_RDWR, 0) < 0);
    assert_int_equal(errno, ENOENT);
    surge_shm_ring_slot(r, 2)[0] = 7;
    assert_int_equal(view[4 * page], 7);
    surge_shm_ring_unlink(r); /* idempotent */
    surge_shm_ring_destroy(&r);
    assert_null(r);
    assert_int_equal(view[4 * page], 7); /* the consumer's pages stay */
    munmap(view, 6 * page);
}

static void
test_destroy_unlinks(void **st)
{
    (void)st;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    surge_shm_ring *r = NULL, *r2 = NULL;
    assert_int_equal(surge_shm_ring_create(&r, 1, page), 0);
    assert_int_equal(surge_shm_ring_create(&r2, 1, page), 0);
    assert_string_not_equal(surge_shm_ring_name(r), surge_shm_ring_name(r2));
    char name[64];
    snprintf(name, sizeof name, "%s", surge_shm_ring_name(r));
    surge_shm_ring_destroy(&r);
    assert_true(shm_open(name, O_RDWR, 0) < 0);
    surge_shm_ring_destroy(&r2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_slots),
        cmocka_unit_test(test_destroy_unlinks),
    };
    return cmocka_run_group_tests_name("shmring", tests, NULL, NULL);
}
