/* A static network peer for the published-port tests and benchmarks: the
 * busybox test image has TCP servers (httpd, nc -l) but no UDP one and no
 * byte sink that reports what it received.
 *
 *   netprobe udp-echo PORT     every datagram is sent back to its sender
 *   netprobe tcp-sink PORT     per connection: read the length (8 bytes), then
 *                              that many bytes, answer the byte count
 *   netprobe vsock-sink PORT   tcp-sink on AF_VSOCK (the raw vsock ceiling)
 *   netprobe tcp-source PORT   reads a size (8 bytes, big-endian), sends that many zero bytes
 *   netprobe vsock-source PORT tcp-source on AF_VSOCK
 *   netprobe vsock-echo PORT   tcp-echo on AF_VSOCK (the connection rate's ceiling)
 *   netprobe tcp-echo PORT     per connection: echo what arrives until EOF
 *   netprobe tcp-peer PORT     per connection: answer the peer's address
 *                              ("IP:PORT\n"), then close: who the container
 *                              sees connecting
 *   netprobe udp-peer PORT     every datagram is answered with its sender's
 *                              address, the same way
 *
 * Built by the tests with `musl-gcc -static` (tests/cli/ports.rs). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* <linux/vm_sockets.h>, which musl-gcc does not see. */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
struct sockaddr_vm {
    sa_family_t svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_zero[4];
};
#define VMADDR_CID_ANY (-1U)

static char buf[1 << 20];

static int listener(int family, int type, int port) {
    int fd = socket(family, type, 0), one = 1;
    if (fd < 0) { perror("socket"); exit(1); }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok;
    if (family == AF_VSOCK) {
        struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY };
        ok = bind(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY) };
        ok = bind(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (ok < 0) { perror("bind"); exit(1); }
    if (family == AF_VSOCK) {
        /* The window the agent gives its streams (guest-agent/src/vsock_window.rs):
         * the raw ceiling is the same stream the agent would get.
         * SO_VM_SOCKETS_BUFFER_MAX_SIZE, then SO_VM_SOCKETS_BUFFER_SIZE. */
        unsigned long long window = 4 << 20;
        setsockopt(fd, AF_VSOCK, 2, &window, sizeof window);
        setsockopt(fd, AF_VSOCK, 0, &window, sizeof window);
    }
    if (type == SOCK_STREAM && listen(fd, 1024) < 0) { perror("listen"); exit(1); }
    return fd;
}

/* The size a client names first (8 bytes, big-endian): how much it sends
 * to a sink, instead of half-closing (hybrid vsock cannot carry a
 * half-close), or wants from a source. 0 if it goes away first. */
static unsigned long long read_size(int c) {
    unsigned char size[8];
    unsigned long long want = 0;
    size_t got = 0;
    ssize_t n;
    while (got < 8 && (n = read(c, size + got, 8 - got)) > 0) got += n;
    for (size_t i = 0; i < got && got == 8; i++) want = want << 8 | size[i];
    return want;
}

static void sink(int fd) {
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        unsigned long long want = read_size(c), total = 0;
        ssize_t n;
        while (total < want && (n = read(c, buf, sizeof buf)) > 0) total += n;
        int len = snprintf(buf, sizeof buf, "%llu\n", total);
        (void)!write(c, buf, len);
        close(c);
    }
}

static void source(int fd) {
    memset(buf, 0, sizeof buf);
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        unsigned long long want = read_size(c);
        ssize_t n;
        while (want > 0 && (n = write(c, buf, want < sizeof buf ? want : sizeof buf)) > 0) want -= n;
        /* The client closes when it has it all: a close here could cut
         * off what hybrid vsock still holds. */
        char rest[64];
        while (read(c, rest, sizeof rest) > 0) {}
        close(c);
    }
}

static void echo(int fd) {
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0)
            if (write(c, buf, n) != n) break;
        close(c);
    }
}

/* "IP:PORT\n" of an IPv4 peer into buf; its length. */
static int peer_text(const struct sockaddr_in *a) {
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    return snprintf(buf, sizeof buf, "%s:%d\n", ip, ntohs(a->sin_port));
}

static void tcp_peer(int fd) {
    for (;;) {
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        int c = accept(fd, (struct sockaddr *)&from, &len);
        if (c < 0) continue;
        (void)!write(c, buf, peer_text(&from));
        close(c);
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: netprobe udp-echo|udp-peer|tcp-sink|tcp-echo|tcp-peer|tcp-source|vsock-sink|vsock-echo|vsock-source PORT\n"); return 2; }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    int port = atoi(argv[2]);
    if (!strcmp(argv[1], "udp-echo")) {
        int fd = listener(AF_INET, SOCK_DGRAM, port);
        printf("ready\n");
        for (;;) {
            struct sockaddr_storage from;
            socklen_t len = sizeof from;
            ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
            if (n >= 0) sendto(fd, buf, n, 0, (struct sockaddr *)&from, len);
        }
    }
    if (!strcmp(argv[1], "udp-peer")) {
        int fd = listener(AF_INET, SOCK_DGRAM, port);
        printf("ready\n");
        for (;;) {
            struct sockaddr_in from;
            socklen_t len = sizeof from;
            if (recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &len) >= 0)
                sendto(fd, buf, peer_text(&from), 0, (struct sockaddr *)&from, len);
        }
    }
    int family = !strncmp(argv[1], "vsock-", 6) ? AF_VSOCK : AF_INET;
    int fd = listener(family, SOCK_STREAM, port);
    printf("ready\n");
    if (!strcmp(argv[1], "tcp-echo") || !strcmp(argv[1], "vsock-echo")) echo(fd);
    if (!strcmp(argv[1], "tcp-peer")) tcp_peer(fd);
    if (!strcmp(argv[1], "tcp-source") || !strcmp(argv[1], "vsock-source")) source(fd);
    sink(fd);
    return 0;
}
