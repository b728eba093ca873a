/* Kernel receive stamps through the process-wide recv (common/rxstamp.c), on
 * a real loopback TCP connection: a message that waited in the socket is
 * stamped when it arrived, not when it was read; a socket that did not ask
 * gets the reading time; recv's own results (peek, would-block, end of
 * stream) are unchanged. read(2), which OpenSSL reads TLS connections with,
 * is stamped the same way on a socket that asked, and stays glibc's read on
 * a descriptor number that became a pipe. */
#include "rxstamp.h"
#include "testutil.h"

#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000LL

static int client = -1, server = -1;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void setup(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(l, 0);
    ck_assert_int_eq(bind(l, (struct sockaddr *)&addr, sizeof(addr)), 0);
    ck_assert_int_eq(listen(l, 1), 0);
    ck_assert_int_eq(getsockname(l, (struct sockaddr *)&addr, &len), 0);
    client = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(client, (struct sockaddr *)&addr, sizeof(addr)), 0);
    server = accept(l, NULL, NULL);
    ck_assert_int_ge(server, 0);
    close(l);
}

static void teardown(void)
{
    close(client);
    close(server);
}

START_TEST(waiting_message_is_stamped_at_arrival)
{
    char buf[16];
    ck_assert_int_eq(rxstamp_enable(server), 0);
    sleep_ms(20); /* the kernel turns stamping on a moment after the first socket asks */
    int64_t sent = now_ns();
    ck_assert_int_eq(send(client, "probe", 5, 0), 5);
    sleep_ms(50); /* a busy loop gets to it late */
    ck_assert_int_eq(recv(server, buf, sizeof(buf), 0), 5);
    int64_t read_at = now_ns(), arrival = rxstamp_arrival(server, read_at);
    ck_assert_int_ge(arrival, sent);
    ck_assert_int_lt(arrival - sent, 20 * MS);
    ck_assert_int_ge(read_at - arrival, 40 * MS);
}
END_TEST

START_TEST(socket_without_stamps_gets_reading_time)
{
    char buf[16];
    ck_assert_int_eq(send(server, "x", 1, 0), 1);
    sleep_ms(20);
    ck_assert_int_eq(recv(client, buf, sizeof(buf), 0), 1);
    int64_t now = now_ns();
    ck_assert_int_eq(rxstamp_arrival(client, now), now);
    ck_assert_int_eq(rxstamp_arrival(-1, now), now);
}
END_TEST

START_TEST(recv_results_unchanged)
{
    char buf[16];
    ck_assert_int_eq(rxstamp_enable(server), 0);
    ck_assert_int_eq(recv(server, buf, sizeof(buf), MSG_DONTWAIT), -1);
    ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
    ck_assert_int_eq(send(client, "abc", 3, 0), 3);
    ck_assert_int_eq(recv(server, buf, 2, MSG_PEEK | MSG_WAITALL), 2);
    ck_assert_int_eq(recv(server, buf, sizeof(buf), 0), 3);
    ck_assert(memcmp(buf, "abc", 3) == 0);
    shutdown(client, SHUT_WR);
    ck_assert_int_eq(recv(server, buf, sizeof(buf), 0), 0);
    ck_assert_int_eq(recv(12345, buf, sizeof(buf), 0), -1);
    ck_assert_int_eq(errno, EBADF);
}
END_TEST

START_TEST(stale_stamp_is_not_an_arrival)
{
    char buf[16];
    ck_assert_int_eq(rxstamp_enable(server), 0);
    ck_assert_int_eq(send(client, "a", 1, 0), 1);
    sleep_ms(10);
    ck_assert_int_eq(recv(server, buf, sizeof(buf), 0), 1);
    int64_t later = now_ns() + 2000 * MS; /* the stamp is two seconds old then */
    ck_assert_int_eq(rxstamp_arrival(server, later), later);
    /* and one from before enable (a reused descriptor) is forgotten */
    ck_assert_int_eq(rxstamp_enable(server), 0);
    int64_t now = now_ns();
    ck_assert_int_eq(rxstamp_arrival(server, now), now);
}
END_TEST

START_TEST(read_is_stamped_at_arrival)
{
    char buf[16];
    ck_assert_int_eq(rxstamp_enable(server), 0);
    sleep_ms(20);
    int64_t sent = now_ns();
    ck_assert_int_eq(send(client, "probe", 5, 0), 5);
    sleep_ms(50);
    ck_assert_int_eq(read(server, buf, sizeof(buf)), 5);
    int64_t read_at = now_ns(), arrival = rxstamp_arrival(server, read_at);
    ck_assert_int_ge(arrival, sent);
    ck_assert_int_lt(arrival - sent, 20 * MS);
    ck_assert_int_ge(read_at - arrival, 40 * MS);
    shutdown(client, SHUT_WR);
    ck_assert_int_eq(read(server, buf, sizeof(buf)), 0); /* end of stream, as read says it */
}
END_TEST

START_TEST(read_of_a_reused_number_is_plain_read)
{
    char buf[16];
    int p[2];
    ck_assert_int_eq(rxstamp_enable(server), 0);
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(dup2(p[0], server), server); /* the socket's number is a pipe now */
    ck_assert_int_eq(write(p[1], "pipe", 4), 4);
    errno = 0;
    ck_assert_int_eq(read(server, buf, sizeof(buf)), 4); /* recvmsg: ENOTSOCK, then read */
    ck_assert_int_eq(errno, 0);                          /* as a successful read leaves it */
    ck_assert(memcmp(buf, "pipe", 4) == 0);
    ck_assert_int_eq(write(p[1], "again", 5), 5);
    ck_assert_int_eq(read(server, buf, sizeof(buf)), 5);
    ck_assert(memcmp(buf, "again", 5) == 0);
    close(p[0]);
    close(p[1]);
}
END_TEST

/* The object library is linked into this executable: libraries bind its
 * recv and read. (A binary without it would not link rxstamp_check at all.) */
START_TEST(libraries_bind_this_recv)
{
    char err[256] = "";
    ck_assert_msg(rxstamp_check(err, sizeof(err)) == 0, "%s", err);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("rxstamp");
    TCase *tc = tcase_create("rxstamp");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, waiting_message_is_stamped_at_arrival);
    tcase_add_test(tc, socket_without_stamps_gets_reading_time);
    tcase_add_test(tc, recv_results_unchanged);
    tcase_add_test(tc, stale_stamp_is_not_an_arrival);
    tcase_add_test(tc, read_is_stamped_at_arrival);
    tcase_add_test(tc, read_of_a_reused_number_is_plain_read);
    tcase_add_test(tc, libraries_bind_this_recv);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
