/*
 * Baseline for the forkecho benchmark: the thread-per-connection echo server (the seeds' second
 * model), with the same echo loop as fork_server.c: 64 KiB buffer, EINTR handled, write-all.
 *
 * usage: thread_server PORT   (binds 127.0.0.1; PORT 0 = any free port)
 * Prints "listening on 127.0.0.1:PORT" on stdout once listening, like forkecho.
 */
#include "echo_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void *serve(void *arg) {
    int fd = (int)(intptr_t)arg;
    char *buf = malloc(65536);
    for (;;) {
        ssize_t n = read(fd, buf, 65536);
        if (n > 0) {
            if (write_all(fd, buf, (size_t)n) < 0) break;
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    free(buf);
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9999;
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on_loopback(port);

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);

    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept");
            continue;
        }
        pthread_t tid;
        if (pthread_create(&tid, &attr, serve, (void *)(intptr_t)cfd) != 0) {
            perror("pthread_create");
            close(cfd);
        }
    }
}
