/* restart_floor: the restart benchmark's floor, a restart with no hop at all.
 *
 * One process that runs `/bin/sleep 300` and, when it exits, reaps it and at
 * once starts the next: with CGROUP_DIR given, each in a leaf cgroup of its
 * own (two leaves taken in turn, each checked empty in one pread of its
 * cgroup.events, then clone3 with CLONE_VFORK | CLONE_INTO_CGROUP, as
 * portnode's spawner starts a program); without, by vfork. This is what a
 * restart costs when the parent decides it alone, with no supervisor, no
 * report and no request in between: the kernel's part (the kill, the
 * teardown, the wake-up of the parent, the clone) on this machine. It prints
 * each program's pid on a line of its own to stdout, and ends (killing the
 * program, removing the leaves) when its stdin closes.
 *
 * Usage: restart_floor [CGROUP_DIR]. Built by bench/run with gcc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char *const program[] = {"/bin/sleep", "300", NULL};
static char *const environment[] = {"PATH=/usr/bin:/bin", NULL};

static pid_t start(int leaf) {
    if (leaf < 0) {
        pid_t pid = vfork();
        if (pid == 0) {
            execve(program[0], program, environment);
            _exit(127);
        }
        return pid;
    }
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (unsigned long long)leaf;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        execve(program[0], program, environment);
        _exit(127);
    }
    return (pid_t)pid;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : NULL;
    char path[4096];
    int leaf[2] = {-1, -1}, events[2] = {-1, -1};
    for (int i = 0; dir && i < 2; i++) {
        snprintf(path, sizeof path, "%s/floor%d", dir, i);
        if (mkdir(path, 0755) < 0 && errno != EEXIST) { printf("error mkdir %s: %s\n", path, strerror(errno)); return 1; }
        leaf[i] = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        snprintf(path, sizeof path, "%s/floor%d/cgroup.events", dir, i);
        events[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (leaf[i] < 0 || events[i] < 0) { printf("error open %s: %s\n", path, strerror(errno)); return 1; }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int current = 0, status = 0;
    for (;;) {
        pid_t pid = start(leaf[current]);
        if (pid < 0) { printf("error clone: %s\n", strerror(errno)); return 1; }
        printf("%d\n", pid);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        struct pollfd polls[2] = {{.fd = 0, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
        int ended = 0;
        while (!ended) {
            if (poll(polls, 2, -1) < 0 && errno != EINTR) break;
            if (polls[0].revents) {
                char c;
                if (read(0, &c, 1) <= 0) { /* stdin closed: stop */
                    kill(pid, SIGKILL);
                    waitpid(pid, &status, 0);
                    for (int i = 0; dir && i < 2; i++) {
                        snprintf(path, sizeof path, "%s/floor%d", dir, i);
                        rmdir(path);
                    }
                    return 0;
                }
            }
            if (polls[1].revents) ended = 1;
        }
        close(pidfd);
        waitpid(pid, &status, 0);
        if (leaf[current] >= 0) {
            char text[256];
            ssize_t n = pread(events[current], text, sizeof text - 1, 0);
            if (n <= 0 || (text[n] = 0, strstr(text, "populated 1"))) { printf("error the leaf is not empty\n"); return 1; }
        }
        current ^= 1;
    }
}
