/*
 * Baseline for the forkecho benchmark: the textbook fork-per-connection echo server in C
 * (Stevens, UNP tcpserv04 + sigchldwaitpid + str_echo), written carefully: a SIGCHLD handler
 * that reaps with waitpid(WNOHANG) in a loop, EINTR handled, a 64 KiB buffer, write-all.
 *
 * usage: fork_server PORT   (binds 127.0.0.1; PORT 0 = any free port)
 * Prints "listening on 127.0.0.1:PORT" on stdout once listening, like forkecho.
 */
#include "echo_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void sig_chld(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static void str_echo(int fd) {
    static char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            if (write_all(fd, buf, (size_t)n) < 0) return;
        } else if (n == 0) {
            return;
        } else if (errno != EINTR) {
            return;
        }
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9999;
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on_loopback(port);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_chld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);

    for (;;) {
        int cfd = accept(lfd, NULL, NULL);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept");
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            str_echo(cfd);
            _exit(0);
        }
        if (pid < 0) perror("fork");
        close(cfd);
    }
}
