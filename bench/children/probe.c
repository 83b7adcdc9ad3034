/* The bench's child and reader, one small binary with a mode per job.
 *
 * Written in C so that what is measured is the supervisor, not the child:
 * it starts in well under a millisecond and its timestamps come from the
 * same clock as Python's time.monotonic() (CLOCK_MONOTONIC).
 *
 *   probe stamp              print the time at start on stdout, exit 0
 *   probe onterm             print "ready", wait; on SIGTERM print the time, exit 0
 *   probe spam COUNT SIZE    print the start time on stdout, then COUNT writes
 *                            of SIZE bytes to stderr, then the end time
 *   probe drain TARGET       read stdin to EOF; print the time when TARGET bytes
 *                            had arrived, then the total byte count
 *   probe die CODE           print the time on stdout, exit CODE
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* One write(2) per line, so a reader never sees half a timestamp. */
static void put_line(int fd, const char *text) {
    size_t left = strlen(text);
    while (left > 0) {
        ssize_t n = write(fd, text, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        text += n;
        left -= (size_t)n;
    }
}

static void put_time(int fd) {
    char line[64];
    snprintf(line, sizeof line, "%lld\n", now_ns());
    put_line(fd, line);
}

static void on_term(int signum) {
    (void)signum;
    /* snprintf is not async-signal-safe in theory; the main thread only
     * sleeps in pause(), so nothing else is inside stdio here. */
    put_time(1);
    _exit(0);
}

static int mode_onterm(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_term;
    sigaction(SIGTERM, &action, NULL);
    put_line(1, "ready\n");
    /* Bounded: the bench sends SIGTERM within seconds; never outlive it. */
    alarm(60);
    for (;;) pause();
}

static int mode_spam(long count, long size) {
    char *buffer = malloc((size_t)size);
    if (buffer == NULL) return 1;
    memset(buffer, 'x', (size_t)size);
    buffer[size - 1] = '\n';
    put_time(1);
    for (long i = 0; i < count; i++) {
        char *at = buffer;
        long left = size;
        while (left > 0) {
            ssize_t n = write(2, at, (size_t)left);
            if (n < 0) {
                if (errno == EINTR) continue;
                return 1;
            }
            at += n;
            left -= n;
        }
    }
    put_time(1);
    return 0;
}

static int mode_drain(long long target) {
    static char buffer[1 << 20];
    long long total = 0;
    long long reached = 0;
    for (;;) {
        ssize_t n = read(0, buffer, sizeof buffer);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        if (n == 0) break;
        total += n;
        if (reached == 0 && total >= target) reached = now_ns();
    }
    if (reached == 0) reached = now_ns();
    char line[96];
    snprintf(line, sizeof line, "%lld %lld\n", reached, total);
    put_line(1, line);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "stamp") == 0) {
        put_time(1);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "onterm") == 0) return mode_onterm();
    if (argc >= 4 && strcmp(argv[1], "spam") == 0)
        return mode_spam(atol(argv[2]), atol(argv[3]));
    if (argc >= 3 && strcmp(argv[1], "drain") == 0) return mode_drain(atoll(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "die") == 0) {
        put_time(1);
        return atoi(argv[2]);
    }
    fprintf(stderr, "usage: probe stamp|onterm|spam COUNT SIZE|drain TARGET|die CODE\n");
    return 2;
}
