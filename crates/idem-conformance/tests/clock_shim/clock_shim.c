/*
 * Test-only: the wall clock of a private redis-server that a test sets.
 *
 * Preloaded (LD_PRELOAD) into a redis-server that tests/differential.rs
 * starts for itself, never into a shared one. The file named by
 * IDEM_CLOCK_FILE holds the time as 8 bytes, milliseconds since the Unix
 * epoch, native byte order; the test rewrites them in place. The wall clock
 * (CLOCK_REALTIME, gettimeofday, time) reads it, so TIME inside the scripts
 * and Redis's own key expiry (PX, PEXPIRE) both follow the test's time.
 * Monotonic clocks are left alone: they drive Redis's event loop, not
 * deadlines of records.
 *
 * libfaketime does the same in general but deadlocks in this redis-server
 * (its initialisation and jemalloc's call each other); this shim allocates
 * nothing and calls the kernel directly.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile const uint64_t *now_ms;

__attribute__((constructor)) static void idem_clock_init(void) {
    const char *path = getenv("IDEM_CLOCK_FILE");
    if (path == NULL) return;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    void *p = mmap(NULL, sizeof(uint64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (p != MAP_FAILED) now_ms = p;
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    if (now_ms != NULL && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        uint64_t ms = *now_ms;
        ts->tv_sec = (time_t)(ms / 1000);
        ts->tv_nsec = (long)(ms % 1000) * 1000000L;
        return 0;
    }
    return (int)syscall(SYS_clock_gettime, id, ts);
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    if (now_ms != NULL) {
        uint64_t ms = *now_ms;
        tv->tv_sec = (time_t)(ms / 1000);
        tv->tv_usec = (suseconds_t)(ms % 1000) * 1000;
        return 0;
    }
    return (int)syscall(SYS_gettimeofday, tv, tz);
}

time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t != NULL) *t = ts.tv_sec;
    return ts.tv_sec;
}
