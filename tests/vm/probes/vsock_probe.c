/* Tries every way a container could reach a vsock service: the seccomp
 * filter's AF_VSOCK rule with junk in the high half of the family (the
 * kernel reads an int), plain AF_VSOCK, and, where a socket can be had,
 * the agent's and the host's ports on CIDs 1 (loopback), 2 (host) and 3
 * (the guest itself). Prints one line per attempt; "ANSWERED" means a
 * service said something back, which must never happen.
 * Built static by the VM tests (cc -static), run inside containers. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static long vsock_socket(unsigned long family) {
    return syscall(SYS_socket, family, (unsigned long)SOCK_STREAM, 0UL);
}

int main(void) {
    long fd = vsock_socket(AF_VSOCK | (1UL << 32));
    printf("socket(AF_VSOCK|1<<32): %s\n", fd < 0 ? strerror(errno) : "created");
    if (fd >= 0) close(fd);
    fd = vsock_socket(AF_VSOCK);
    printf("socket(AF_VSOCK): %s\n", fd < 0 ? strerror(errno) : "created");
    if (fd >= 0) close(fd);

    unsigned cids[] = {1, 2, 3};
    unsigned ports[] = {1024, 1025};
    for (unsigned c = 0; c < 3; c++) {
        for (unsigned p = 0; p < 2; p++) {
            fd = vsock_socket(AF_VSOCK | (1UL << 32));
            if (fd < 0) fd = vsock_socket(AF_VSOCK);
            if (fd < 0) {
                printf("cid %u port %u: no socket (%s)\n", cids[c], ports[p], strerror(errno));
                continue;
            }
            struct timeval timeout = {2, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
            struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cids[c], .svm_port = ports[p]};
            if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
                printf("cid %u port %u: connect: %s\n", cids[c], ports[p], strerror(errno));
                close(fd);
                continue;
            }
            /* A wrong key, then HTTP/2's preface: the agent must stay silent. */
            char hello[32 + 24];
            memset(hello, 0, 32);
            memcpy(hello + 32, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
            ssize_t sent = write(fd, hello, sizeof hello);
            char reply[64];
            ssize_t got = read(fd, reply, sizeof reply);
            printf("cid %u port %u: connected, sent %zd, %s\n", cids[c], ports[p], sent,
                   got > 0 ? "ANSWERED" : got == 0 ? "closed" : strerror(errno));
            close(fd);
        }
    }
    return 0;
}
