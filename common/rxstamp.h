/* rxstamp.h — when the kernel received what a socket read returned.
 *
 * A clock probe's receive stamp (the agent's t4, a simulated device's
 * arrival) should be the instant the bytes reached the host, not the instant
 * a busy event loop got round to them: at 1024 devices the two differ by
 * hundreds of microseconds, and that wait lands on one side of the probe
 * only. libwebsockets reads its sockets with recv(2), and OpenSSL (under
 * lws's TLS) with read(2); neither has a hook for ancillary data, so this
 * module defines recv and read for the whole process: recv made as
 * recvmsg(2), which also keeps, per descriptor, the SO_TIMESTAMPNS stamp of
 * the last TCP segment that read returned (CLOCK_REALTIME, the clock of
 * ev_now_ns); read the same for a descriptor that asked for stamps, glibc's
 * read for every other. Semantics are otherwise unchanged for every caller;
 * a descriptor that did not ask for stamps costs one recvmsg with an unused
 * control buffer (recv) or one array lookup (read; a number that asked once
 * and now is no socket costs one failed recvmsg, once). A number that asked
 * and is reused for a Unix socket would have its read take SCM_RIGHTS
 * descriptors nobody sees: no process that links this passes descriptors.
 *
 * Thread-safety: recv and read may run on any thread; each descriptor's stamp is
 * written by the thread reading it. rxstamp_enable and rxstamp_arrival are
 * called by the thread that owns the descriptor (the event loop). */
#ifndef MSRS_RXSTAMP_H
#define MSRS_RXSTAMP_H
#include <stddef.h>
#include <stdint.h>

/* Asks the kernel to stamp what fd receives (SO_TIMESTAMPNS) and forgets any
 * stamp an earlier descriptor with the same number left. 0 ok, -1 failed
 * (errno set: the caller stamps in user space instead). The first socket of
 * the process to ask turns stamping on in the kernel a moment later (a
 * deferred static key); until then reads are stamped when they happen. */
int rxstamp_enable(int fd);

/* The kernel's receive stamp of the last read on fd, when it is one that
 * can be the arrival of a message handled now: not after now_ns and not
 * older than a second. Otherwise (no stamp, stamps not enabled) now_ns. */
int64_t rxstamp_arrival(int fd, int64_t now_ns);

/* 0 when the names recv and read resolve, for every library of this
 * process, to this file's functions (dlsym(RTLD_DEFAULT) against hidden
 * aliases), as the stamps need (plain libwebsockets reads with recv,
 * a TLS connection through OpenSSL's read); -1 (errstr says what was
 * found) when they bind another. Binaries that rely on the stamps call it at
 * start and refuse to run without them unless told otherwise. */
int rxstamp_check(char *errstr, size_t errstr_size);

#endif
