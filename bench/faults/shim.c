/* The fault layer of the campaign (docs/reliability.md): an LD_PRELOAD library for the gateway
 * process that simulates what a power cut does to its files, fails its writes on demand, and
 * moves its wall clock.
 *
 * Power cuts. Every write to a file under $TG_FAULT_DIR (the journal's directory) is preceded
 * by an undo record in $TG_FAULT_UNDO: the bytes the write replaces and the file's size before
 * it. fsync(2) or fdatasync(2) of a file forgets the records of that file: what was synced
 * survives. After the process is killed, bench/faults/layer.py applies the records left, newest
 * first, so every file is back at the content it had at its last sync: the unsynced writes are
 * lost, all of them (the worst case of a volatile disk cache; LazyFS's "lose unsynced data").
 * The process cannot tell the difference while it runs; the kernel's page cache serves it as
 * usual. The undo log itself is never synced: a SIGKILL leaves it in the page cache, which is
 * all a simulated power cut needs.
 *
 * Not modelled: torn or partly persisted writes (a subset of the unsynced ones), and directory
 * entries (file creation and deletion count as durable at once; SQLite syncs the directory of a
 * new WAL itself). Files named *-shm are not tracked: SQLite's shared-memory index is rebuilt
 * from the WAL by the first connection after a crash, whatever it holds.
 *
 * Injected errors. $TG_FAULT_CTL names a control file, re-read whenever it was replaced:
 *     write=ok|enospc|eio     write(2), pwrite(2) and ftruncate(2) of tracked files fail so
 *     fsync=ok|eio            fsync(2) and fdatasync(2) of tracked files fail (nothing synced)
 *     clock=SECONDS           added to CLOCK_REALTIME (clock_gettime, gettimeofday, time)
 *     die_after_writes=N      the process kills itself (SIGKILL) right after its Nth write to a
 *                             tracked file from now on: a power cut in the middle of a commit,
 *                             between a write and its sync
 * One setting a line; a missing file means all ok. CLOCK_MONOTONIC is never touched.
 *
 * SQLite calls these through its own table of system calls, filled with the addresses of the
 * libc functions when libsqlite3 is loaded; with this library preloaded, those addresses are
 * ours (symbol interposition), so its unix VFS writes through the functions below.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char dir[4096];
static size_t dir_len;
static int undo_fd = -1;
static char ctl[4096];

static pthread_mutex_t ctl_lock = PTHREAD_MUTEX_INITIALIZER;
static ino_t ctl_ino;          /* of the control file last read; 0: none */
static int write_errno;        /* 0: writes pass */
static int fsync_errno;        /* 0: syncs pass */
static volatile double clock_offset;
static long die_after;         /* 0: never */
static long writes_seen;       /* tracked writes since the control file was read */

static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
    const char *d = getenv("TG_FAULT_DIR");
    const char *u = getenv("TG_FAULT_UNDO");
    const char *c = getenv("TG_FAULT_CTL");
    if (d != NULL && u != NULL && strlen(d) + 2 < sizeof dir) {
        snprintf(dir, sizeof dir, "%s%s", d, d[strlen(d) - 1] == '/' ? "" : "/");
        dir_len = strlen(dir);
        undo_fd = open(u, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
    if (c != NULL && strlen(c) < sizeof ctl)
        strcpy(ctl, c);
}

static int errno_of(const char *v) {
    if (strncmp(v, "enospc", 6) == 0)
        return ENOSPC;
    if (strncmp(v, "eio", 3) == 0)
        return EIO;
    return 0;
}

static void read_ctl(void) {
    if (ctl[0] == '\0')
        return;
    /* Re-read when the file was replaced (layer.py writes a new one and renames it over the
     * old: a new inode), so a setting is in force for every call after the rename. */
    struct stat st;
    ino_t ino = stat(ctl, &st) == 0 ? st.st_ino : 0;
    pthread_mutex_lock(&ctl_lock);
    if (ino == ctl_ino) {
        pthread_mutex_unlock(&ctl_lock);
        return;
    }
    ctl_ino = ino;
    int we = 0, fe = 0;
    long die = 0;
    double off = 0.0;
    FILE *f = ino ? fopen(ctl, "re") : NULL;
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "write=", 6) == 0)
                we = errno_of(line + 6);
            else if (strncmp(line, "fsync=", 6) == 0)
                fe = errno_of(line + 6);
            else if (strncmp(line, "clock=", 6) == 0)
                off = strtod(line + 6, NULL);
            else if (strncmp(line, "die_after_writes=", 17) == 0)
                die = strtol(line + 17, NULL, 10);
        }
        fclose(f);
    }
    die_after = die;
    writes_seen = 0;
    write_errno = we;
    fsync_errno = fe;
    clock_offset = off;
    pthread_mutex_unlock(&ctl_lock);
}

/* The path of `fd` when it is a tracked file, else 0. */
static int tracked(int fd, char *path, size_t size) {
    pthread_once(&once, init);
    if (undo_fd < 0 || fd == undo_fd)
        return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, size - 1);
    if (n <= 0)
        return 0;
    path[n] = '\0';
    if ((size_t)n <= dir_len || strncmp(path, dir, dir_len) != 0)
        return 0;
    if (n > 4 && strcmp(path + n - 4, "-shm") == 0)
        return 0;
    return 1;
}

static void put(const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t w = real_write(undo_fd, c, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return; /* the campaign checks the log's framing; a short log fails it loudly */
        }
        c += w;
        n -= (size_t)w;
    }
}

/* Record type, path, then for 'W': offset, size before, and the bytes the write replaces. */
static void record(char type, const char *path, int fd, off_t offset, size_t len) {
    uint32_t plen = (uint32_t)strlen(path);
    put(&type, 1);
    put(&plen, 4);
    put(path, plen);
    if (type != 'W')
        return;
    struct stat st;
    int64_t size = fstat(fd, &st) == 0 ? (int64_t)st.st_size : 0;
    int64_t off = (int64_t)offset;
    uint32_t keep = 0;
    if (off < size)
        keep = (uint32_t)((int64_t)len < size - off ? (int64_t)len : size - off);
    char *old = keep ? malloc(keep) : NULL;
    if (keep && (old == NULL || pread(fd, old, keep, offset) != (ssize_t)keep)) {
        keep = 0; /* unreadable: recorded as nothing to restore; the size still truncates */
    }
    put(&off, 8);
    put(&size, 8);
    put(&keep, 4);
    if (keep)
        put(old, keep);
    free(old);
}

/* Under `lock`, after a tracked write: the self-inflicted power cut of die_after_writes. */
static void maybe_die(void) {
    if (die_after > 0 && ++writes_seen >= die_after)
        raise(SIGKILL);
}

static ssize_t guarded_pwrite(ssize_t (*fn)(int, const void *, size_t, off_t), int fd,
                              const void *buf, size_t count, off_t offset) {
    char path[4096];
    if (!tracked(fd, path, sizeof path))
        return fn(fd, buf, count, offset);
    read_ctl();
    if (write_errno) {
        errno = write_errno;
        return -1;
    }
    pthread_mutex_lock(&lock);
    record('W', path, fd, offset, count);
    ssize_t r = fn(fd, buf, count, offset);
    maybe_die();
    pthread_mutex_unlock(&lock);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    pthread_once(&once, init);
    return guarded_pwrite(real_pwrite, fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    pthread_once(&once, init);
    return guarded_pwrite(real_pwrite64, fd, buf, count, offset);
}

ssize_t write(int fd, const void *buf, size_t count) {
    pthread_once(&once, init);
    char path[4096];
    if (!tracked(fd, path, sizeof path))
        return real_write(fd, buf, count);
    read_ctl();
    if (write_errno) {
        errno = write_errno;
        return -1;
    }
    pthread_mutex_lock(&lock);
    off_t at = lseek(fd, 0, SEEK_CUR);
    if (fcntl(fd, F_GETFL) & O_APPEND) {
        struct stat st;
        at = fstat(fd, &st) == 0 ? st.st_size : at;
    }
    if (at >= 0)
        record('W', path, fd, at, count);
    ssize_t r = real_write(fd, buf, count);
    maybe_die();
    pthread_mutex_unlock(&lock);
    return r;
}

static int guarded_truncate(int (*fn)(int, off_t), int fd, off_t length) {
    char path[4096];
    if (!tracked(fd, path, sizeof path))
        return fn(fd, length);
    read_ctl();
    if (write_errno) {
        errno = write_errno;
        return -1;
    }
    pthread_mutex_lock(&lock);
    struct stat st;
    /* The tail it cuts off (its pre-image), or, when it grows the file, the size to go back to. */
    if (fstat(fd, &st) == 0) {
        off_t from = length < st.st_size ? length : st.st_size;
        record('W', path, fd, from, (size_t)(st.st_size - from));
    }
    int r = fn(fd, length);
    pthread_mutex_unlock(&lock);
    return r;
}

int ftruncate(int fd, off_t length) {
    pthread_once(&once, init);
    return guarded_truncate(real_ftruncate, fd, length);
}

int ftruncate64(int fd, off_t length) {
    pthread_once(&once, init);
    return guarded_truncate(real_ftruncate64, fd, length);
}

static int guarded_sync(int (*fn)(int), int fd) {
    char path[4096];
    if (!tracked(fd, path, sizeof path))
        return fn(fd);
    read_ctl();
    if (fsync_errno) {
        errno = fsync_errno;
        return -1;
    }
    pthread_mutex_lock(&lock);
    int r = fn(fd);
    if (r == 0)
        record('S', path, fd, 0, 0);
    pthread_mutex_unlock(&lock);
    return r;
}

int fsync(int fd) {
    pthread_once(&once, init);
    return guarded_sync(real_fsync, fd);
}

int fdatasync(int fd) {
    pthread_once(&once, init);
    return guarded_sync(real_fdatasync, fd);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    pthread_once(&once, init);
    int r = real_clock_gettime(id, ts);
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        read_ctl();
        double off = clock_offset;
        if (off != 0.0) {
            int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + (int64_t)(off * 1e9);
            ts->tv_sec = ns / 1000000000LL;
            ts->tv_nsec = ns % 1000000000LL;
        }
    }
    return r;
}

int gettimeofday(struct timeval *tv, void *tz) {
    pthread_once(&once, init);
    int r = real_gettimeofday(tv, tz);
    if (r == 0) { /* tv is declared nonnull by glibc */
        read_ctl();
        double off = clock_offset;
        if (off != 0.0) {
            int64_t us = (int64_t)tv->tv_sec * 1000000LL + tv->tv_usec + (int64_t)(off * 1e6);
            tv->tv_sec = us / 1000000LL;
            tv->tv_usec = us % 1000000LL;
        }
    }
    return r;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != NULL)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
