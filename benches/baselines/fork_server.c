/*
 * Baseline for the forkecho benchmark: the textbook fork-per-connection echo server in C
 * (Stevens, UNP tcpserv04 + sigchldwaitpid + str_echo), written carefully: a SIGCHLD handler
 * that reaps with waitpid(WNOHANG) in a loop, EINTR handled, a 64 KiB buffer, write-all.
 *
 * usage: fork_server PORT [LOGFILE [json]]   (binds 127.0.0.1; PORT 0 = any free port)
 * Prints "listening on 127.0.0.1:PORT" on stdout once listening, like forkecho.
 *
 * With LOGFILE, it logs what forkecho logs per connection, the way forkecho does: the parent an
 * accept line after the fork, the child a close line after the echo, each formatted with
 * snprintf into a buffer on the stack and written with one write(2) to LOGFILE, opened with
 * O_APPEND (text lines, or JSON objects with a time stamp with `json`). The physical floor of
 * "a line per connection to a file" in this design, against which forkecho's logging is set.
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
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static int log_fd = -1;
static int log_json = 0;
/* Written by the SIGCHLD handler too. */
static volatile sig_atomic_t live = 0;

/* One line, with one write(2): `event` and its fields, as text or as JSON with a time stamp. */
static void log_line(const char *event, const char *fields_text, const char *fields_json) {
    char line[512];
    int n;
    if (log_json) {
        struct timespec now;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &now);
        gmtime_r(&now.tv_sec, &tm);
        n = snprintf(line, sizeof line,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ\",\"event\":\"%s\",%s}\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, now.tv_nsec / 1000, event, fields_json);
    } else {
        n = snprintf(line, sizeof line, "fork_server: %s %s\n", event, fields_text);
    }
    if (n > 0) (void)write(log_fd, line, (size_t)n < sizeof line ? (size_t)n : sizeof line);
}

/* `ADDR:PORT` of a client, as accept(2) gave it. */
static void peer_of(const struct sockaddr_in *addr, char *peer, size_t len) {
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &addr->sin_addr, ip, sizeof ip);
    snprintf(peer, len, "%s:%d", ip, ntohs(addr->sin_port));
}

static void sig_chld(int signo) {
    (void)signo;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
        live--;
    }
    errno = saved;
}

/* Echoes until EOF or an error; returns the bytes echoed. */
static long str_echo(int fd) {
    static char buf[65536];
    long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n > 0) {
            if (write_all(fd, buf, (size_t)n) < 0) return total;
            total += n;
        } else if (n == 0) {
            return total;
        } else if (errno != EINTR) {
            return total;
        }
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9999;
    if (argc > 2) {
        log_fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_fd < 0) { perror(argv[2]); exit(1); }
        log_json = argc > 3 && strcmp(argv[3], "json") == 0;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = listen_on_loopback(port);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = sig_chld;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);

    for (;;) {
        struct sockaddr_in addr;
        socklen_t alen = sizeof addr;
        char peer[64] = "";
        int cfd = accept(lfd, (struct sockaddr *)&addr, &alen);
        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept");
            continue;
        }
        if (log_fd >= 0) peer_of(&addr, peer, sizeof peer);
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            struct timespec start, end;
            if (log_fd >= 0) clock_gettime(CLOCK_MONOTONIC, &start);
            long bytes = str_echo(cfd);
            close(cfd);
            if (log_fd >= 0) {
                char text[256], json[256];
                clock_gettime(CLOCK_MONOTONIC, &end);
                double secs = (double)(end.tv_sec - start.tv_sec) +
                              (double)(end.tv_nsec - start.tv_nsec) / 1e9;
                snprintf(text, sizeof text, "peer=%s pid=%d bytes=%ld duration=%.3fs end=client-closed",
                         peer, (int)getpid(), bytes, secs);
                snprintf(json, sizeof json,
                         "\"peer\":\"%s\",\"pid\":%d,\"bytes\":%ld,\"duration\":%.3f,"
                         "\"end\":\"client-closed\"",
                         peer, (int)getpid(), bytes, secs);
                log_line("close", text, json);
            }
            _exit(0);
        }
        if (pid < 0) perror("fork");
        if (pid > 0 && log_fd >= 0) {
            char text[256], json[256];
            live++;
            snprintf(text, sizeof text, "peer=%s pid=%d live=%d", peer, (int)pid, live);
            snprintf(json, sizeof json, "\"peer\":\"%s\",\"pid\":%d,\"live\":%d", peer,
                     (int)pid, live);
            log_line("accept", text, json);
        }
        close(cfd);
    }
}
