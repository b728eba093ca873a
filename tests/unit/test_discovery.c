/* Discovery datagrams (common/discovery.c) on real loopback UDP sockets:
 * a query reaches a listener, another prefix, kind or version and junk
 * are skipped and counted, oversized messages are refused, targets must
 * be IPv4 addresses. */
#include "discovery.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int listener, sender, port;
static char err[256];

static void setup(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    listener = dsc_socket(0, err, sizeof(err));
    ck_assert_msg(listener >= 0, "%s", err);
    ck_assert_int_eq(getsockname(listener, (struct sockaddr *)&sa, &len), 0);
    port = ntohs(sa.sin_port);
    sender = dsc_socket(0, err, sizeof(err));
    ck_assert_msg(sender >= 0, "%s", err);
}

static void teardown(void)
{
    close(listener);
    close(sender);
}

/* Waits until the listener has something to read (datagrams on loopback
 * are there at once; this keeps the test free of sleeps). */
static void wait_readable(void)
{
    struct pollfd p = {.fd = listener, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 2000), 1);
}

static void send_text(const char *text)
{
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    ck_assert_int_eq(sendto(sender, text, strlen(text), 0, (struct sockaddr *)&to, sizeof(to)),
                     (ssize_t)strlen(text));
}

START_TEST(a_query_for_our_prefix_arrives)
{
    json_t *q = json_pack("{s:s, s:s, s:i}", "msrs", "discover", "prefix", "msrs.", "v", 1);
    ck_assert_int_eq(dsc_send_all(sender, "127.0.0.1", port, q, err, sizeof(err)), 1);
    json_decref(q);
    wait_readable();
    struct sockaddr_in from;
    int64_t skipped = 0;
    json_t *m = dsc_recv(listener, "discover", "msrs.", &from, &skipped);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(skipped, 0);
    ck_assert_str_eq(json_string_value(json_object_get(m, "prefix")), "msrs.");
    ck_assert_int_eq(from.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    json_decref(m);
    ck_assert_ptr_null(dsc_recv(listener, "discover", "msrs.", &from, &skipped)); /* drained */
}
END_TEST

START_TEST(other_prefixes_kinds_versions_and_junk_are_skipped)
{
    send_text("{\"msrs\": \"discover\", \"prefix\": \"lab2.\", \"v\": 1}");
    send_text("{\"msrs\": \"supervisor\", \"prefix\": \"msrs.\", \"v\": 1}");
    send_text("{\"msrs\": \"discover\", \"prefix\": \"msrs.\", \"v\": 2}");
    send_text("not json at all");
    send_text("[1, 2, 3]");
    send_text("{\"msrs\": \"discover\", \"prefix\": \"msrs.\", \"v\": 1}");
    wait_readable();
    struct sockaddr_in from;
    int64_t skipped = 0;
    json_t *m = dsc_recv(listener, "discover", "msrs.", &from, &skipped);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(skipped, 5);
    json_decref(m);
}
END_TEST

START_TEST(oversized_messages_are_not_sent)
{
    char big[DSC_MAX + 16];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_t *q = json_pack("{s:s, s:s}", "msrs", "discover", "pad", big);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    ck_assert_int_eq(dsc_send(sender, &to, q), -1);
    ck_assert_int_eq(errno, EMSGSIZE);
    json_decref(q);
}
END_TEST

START_TEST(targets_must_be_ipv4_addresses)
{
    ck_assert_int_eq(dsc_send_all(sender, "127.0.0.1,lab-pc", port, NULL, err, sizeof(err)), -1);
    ck_assert(strstr(err, "lab-pc") != NULL);
    ck_assert_int_eq(dsc_send_all(sender, DSC_TARGETS, port, NULL, err, sizeof(err)), 0);
}
END_TEST

START_TEST(a_taken_port_is_named)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0); /* no SO_REUSEADDR: dsc_socket cannot share it */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    socklen_t len = sizeof(sa);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    ck_assert_int_eq(dsc_socket(ntohs(sa.sin_port), err, sizeof(err)), -1);
    ck_assert(strstr(err, "UDP port") != NULL);
    close(fd);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("discovery");
    TCase *tc = tcase_create("discovery");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_query_for_our_prefix_arrives);
    tcase_add_test(tc, other_prefixes_kinds_versions_and_junk_are_skipped);
    tcase_add_test(tc, oversized_messages_are_not_sent);
    tcase_add_test(tc, targets_must_be_ipv4_addresses);
    tcase_add_test(tc, a_taken_port_is_named);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
