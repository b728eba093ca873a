/* rxstamp.c — kernel receive stamps through a process-wide recv and read
 * (rxstamp.h). */
#include "rxstamp.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* stamps[fd]: ns of the last read's newest segment, 0 for none;
 * read_via_recvmsg[fd] 1 when read(2) on fd goes through recvmsg too (set by rxstamp_enable,
 * cleared when the number turns out to be no socket any more). Allocated
 * once, for every descriptor number the process may open; never freed. */
static int64_t *stamps;
static unsigned char *read_via_recvmsg;
static int nstamps;
static pthread_once_t stamps_once = PTHREAD_ONCE_INIT;

static void stamps_alloc(void)
{
    struct rlimit rl;
    rlim_t n = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
    if (n == RLIM_INFINITY || n > (1 << 20))
        n = 1 << 20;
    int64_t *s = calloc((size_t)n, sizeof(*s));
    read_via_recvmsg = calloc((size_t)n, 1);
    if (!s || !read_via_recvmsg) {
        free(s);
        free(read_via_recvmsg);
        read_via_recvmsg = NULL;
        return;
    }
    nstamps = (int)n;
    __atomic_store_n(&stamps, s, __ATOMIC_RELEASE);
}

static ssize_t stamped_recv(int fd, void *buf, size_t len, int flags);

int rxstamp_enable(int fd)
{
    int on = 1;
    pthread_once(&stamps_once, stamps_alloc);
    if (!stamps || fd < 0 || fd >= nstamps)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0)
        return -1;
    __atomic_store_n(&stamps[fd], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&read_via_recvmsg[fd], 1, __ATOMIC_RELAXED);
    return 0;
}

int64_t rxstamp_arrival(int fd, int64_t now_ns)
{
    int64_t *s = __atomic_load_n(&stamps, __ATOMIC_ACQUIRE);
    if (!s || fd < 0 || fd >= nstamps)
        return now_ns;
    int64_t t = __atomic_load_n(&s[fd], __ATOMIC_RELAXED);
    return t > 0 && t <= now_ns && now_ns - t < 1000000000LL ? t : now_ns;
}

/* recv(2), as recvmsg(2) with room for a timestamp. Overrides libc's recv
 * for every library of this process (the executable's symbol comes first). */
ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    return stamped_recv(fd, buf, len, flags);
}

/* glibc's read, under its exported alias */
extern ssize_t __read(int fd, void *buf, size_t len);

/* read(2): OpenSSL reads its sockets with read, so a TLS connection's
 * stamps come through here. A descriptor that asked for stamps is read as
 * recv(fd, buf, len, 0) (the same for a stream socket); every other one,
 * and one whose number now belongs to something that is no socket
 * (ENOTSOCK: its flag is cleared), by glibc's read. */
ssize_t read(int fd, void *buf, size_t len)
{
    unsigned char *r = __atomic_load_n(&stamps, __ATOMIC_ACQUIRE) ? read_via_recvmsg : NULL;
    if (!r || fd < 0 || fd >= nstamps || !__atomic_load_n(&r[fd], __ATOMIC_RELAXED))
        return __read(fd, buf, len);
    int saved = errno;
    ssize_t n = stamped_recv(fd, buf, len, 0);
    if (n < 0 && errno == ENOTSOCK) {
        __atomic_store_n(&r[fd], 0, __ATOMIC_RELAXED);
        errno = saved; /* as if read had been called alone */
        return __read(fd, buf, len);
    }
    return n;
}

static ssize_t stamped_recv(int fd, void *buf, size_t len, int flags)
{
    struct iovec iov = {buf, len};
    union {
        char buf[CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    int64_t *s = __atomic_load_n(&stamps, __ATOMIC_ACQUIRE);
    if (!s || fd < 0 || fd >= nstamps)
        return recvmsg(fd, &mh, flags);
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    ssize_t n = recvmsg(fd, &mh, flags);
    if (n > 0) {
        int64_t t = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            }
        __atomic_store_n(&s[fd], t, __ATOMIC_RELAXED);
    }
    return n;
}

/* This file's recv under a name no one else can bind: its address is the
 * function itself, never a PLT or GOT entry (which, in -fPIC code, would
 * resolve to whatever recv the process binds and make the check below
 * always pass). */
extern ssize_t rxstamp__own_recv(int fd, void *buf, size_t len, int flags)
    __attribute__((alias("recv"), visibility("hidden")));
extern ssize_t rxstamp__own_read(int fd, void *buf, size_t len)
    __attribute__((alias("read"), visibility("hidden")));

int rxstamp_check(char *errstr, size_t errstr_size)
{
    /* Shared libraries (libwebsockets) bind recv through the global scope;
     * the executable exports the recv they reference, so the lookup must
     * find this one. It does not when this object is in a shared library
     * loaded after libc or was not linked into the executable at all. */
    void *bound = dlsym(RTLD_DEFAULT, "recv"), *bound_read = dlsym(RTLD_DEFAULT, "read");
    if (bound == (void *)rxstamp__own_recv && bound_read == (void *)rxstamp__own_read)
        return 0;
    snprintf(errstr, errstr_size,
             "kernel receive stamps: recv and read resolve to %p and %p, not rxstamp's %p and %p "
             "(link the rxstamp object library into the executable; docs/architecture.md)",
             bound, bound_read, (void *)rxstamp__own_recv, (void *)rxstamp__own_read);
    return -1;
}
