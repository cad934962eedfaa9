/* restart_floor: the restart benchmark's floor, a restart with no hop at all.
 *
 * One process that runs `/bin/sleep 300` and, when it exits, reaps it and at
 * once starts the next: with CGROUP_DIR given, each in a leaf cgroup of its
 * own (two leaves taken in turn, each checked empty in one pread of its
 * cgroup.events, then clone3 with CLONE_VFORK | CLONE_INTO_CGROUP, as
 * portnode's spawner starts a program, but without its CLONE_VM; the leaves
 * have no controller on); without, by vfork. The program's stdin and stdout
 * are /dev/null. This is what a
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

static char leaf_path[2][4096];
static int leaves;

/* Removes the leaves made (each empty once its program is reaped). */
static void remove_leaves(void) {
    for (int i = 0; i < leaves; i++) rmdir(leaf_path[i]);
}

static int fail(const char *what, int error) {
    printf("error %s: %s\n", what, strerror(error));
    remove_leaves();
    return 1;
}

/* In the child, between clone and exec: system calls only. */
static void run_program(void) {
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        if (null > 1) close(null);
    }
    execve(program[0], program, environment);
    _exit(127);
}

static pid_t start(int leaf) {
    if (leaf < 0) {
        pid_t pid = vfork();
        if (pid == 0) run_program();
        return pid;
    }
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VFORK | CLONE_INTO_CGROUP;
    args.exit_signal = SIGCHLD;
    args.cgroup = (unsigned long long)leaf;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) run_program();
    return (pid_t)pid;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : NULL;
    char path[4096 + 32];
    int leaf[2] = {-1, -1}, events[2] = {-1, -1};
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; dir && i < 2; i++) {
        snprintf(leaf_path[i], sizeof leaf_path[i], "%s/floor%d", dir, i);
        if (mkdir(leaf_path[i], 0755) < 0 && errno != EEXIST) return fail("mkdir of a leaf", errno);
        leaves = i + 1;
        leaf[i] = open(leaf_path[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (leaf[i] < 0) return fail("open of a leaf", errno);
        snprintf(path, sizeof path, "%s/cgroup.events", leaf_path[i]);
        events[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (events[i] < 0) return fail("open of a leaf's cgroup.events", errno);
    }
    int current = 0, status = 0;
    for (;;) {
        pid_t pid = start(leaf[current]);
        if (pid < 0) return fail("clone", errno);
        int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0) {
            int error = errno;
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return fail("pidfd_open", error);
        }
        printf("%d\n", pid);
        struct pollfd polls[2] = {{.fd = 0, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
        int ended = 0;
        while (!ended) {
            if (poll(polls, 2, -1) < 0) {
                if (errno == EINTR) continue;
                int error = errno;
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                return fail("poll", error);
            }
            if (polls[0].revents) {
                char c;
                if (read(0, &c, 1) <= 0) { /* stdin closed: stop */
                    kill(pid, SIGKILL);
                    waitpid(pid, &status, 0);
                    remove_leaves();
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
            if (n <= 0) return fail("read of a leaf's cgroup.events", n < 0 ? errno : EIO);
            text[n] = 0;
            if (strstr(text, "populated 1")) return fail("the leaf is not empty", EBUSY);
        }
        current ^= 1;
    }
}
