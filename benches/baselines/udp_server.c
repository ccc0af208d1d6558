/*
 * The floor for UDP echo: one socket on 127.0.0.1:PORT (0 = any free port), a plain
 * recvfrom/sendto loop, no guards, no faults. Prints "listening on udp 127.0.0.1:PORT" like
 * forkecho --udp-only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((unsigned short)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    socklen_t alen = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &alen);
    printf("listening on udp 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    static char buf[65536];
    for (;;) {
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("recvfrom");
            return 1;
        }
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, flen);
    }
}
