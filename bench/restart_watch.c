/* restart_watch: the restart benchmark's stopwatch, outside the VM and portnode.
 *
 * Reads one line per sample on stdin, "PID\n": it reads PID's parent from
 * /proc/PID/stat, takes CLOCK_MONOTONIC, sends PID SIGKILL, and waits for
 * the parent's next child (a process, not a thread) to be forked and then to
 * exec. It answers "ok FORK_NS EXEC_NS CPU_NS EVENTS\n": ns from just before
 * kill(2) to the fork and to the exec, the CPU time (user + system) this
 * process spent on the sample, and how many process events it read (every
 * event that passed its socket filter: the parent's forks, and every exec on
 * the machine while it waited). Errors are one line:
 * "error WHY".
 *
 * How it watches: the kernel's process events connector (netlink,
 * NETLINK_CONNECTOR / CN_IDX_PROC; needs CAP_NET_ADMIN). The kernel stamps
 * each event with ktime_get_ns() (CLOCK_MONOTONIC) in the forking or
 * exec'ing process itself, so the times do not depend on when this process
 * gets to run, and it sleeps in recv(2) instead of polling: neither the VM
 * nor portnode pays for the measurement, and it needs no core of its own.
 * It matches the parent by tgid, so it does not matter which thread of the
 * parent forks, nor whether the parent is portnode, a spawner process of
 * portnode's or erl_child_setup.
 *
 * Built by bench/run with gcc into a temporary directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int listen_socket(void) {
    int s = socket(PF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (s < 0) return -1;
    int size = 16 << 20; /* other builds on the machine fork a lot: room for their events */
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0};
    if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) return -1;
    struct __attribute__((aligned(NLMSG_ALIGNTO))) {
        struct nlmsghdr hdr;
        struct __attribute__((packed)) {
            struct cn_msg msg;
            enum proc_cn_mcast_op op;
        } body;
    } req;
    memset(&req, 0, sizeof req);
    req.hdr.nlmsg_len = sizeof req;
    req.hdr.nlmsg_type = NLMSG_DONE;
    req.body.msg.id.idx = CN_IDX_PROC;
    req.body.msg.id.val = CN_VAL_PROC;
    req.body.msg.len = sizeof(enum proc_cn_mcast_op);
    req.body.op = PROC_CN_MCAST_LISTEN;
    if (send(s, &req, sizeof req, 0) < 0) return -1;
    return s;
}

static int parent_of(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *close = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    int ppid;
    char state;
    if (!close || sscanf(close + 1, " %c %d", &state, &ppid) != 2) return -1;
    return ppid;
}

static long long cpu_ns(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000LL + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000LL;
}

/* A socket filter, so that the kernel wakes this process for the two events
 * it waits for only: a fork by `parent', and an exec (any: few others exec
 * while a sample runs). Not the program's exit, which comes while the
 * parent is at work. Offsets: the netlink header, the connector header,
 * then the event; BPF loads words in network order, hence htonl. */
static void only_fork_of(int s, int parent) {
    const unsigned what = NLMSG_LENGTH(0) + offsetof(struct cn_msg, data) + offsetof(struct proc_event, what);
    const unsigned tgid = NLMSG_LENGTH(0) + offsetof(struct cn_msg, data) + offsetof(struct proc_event, event_data.fork.parent_tgid);
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, what),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(PROC_EVENT_EXEC), 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl(PROC_EVENT_FORK), 0, 2),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, tgid),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, htonl((unsigned)parent), 1, 0),
        BPF_STMT(BPF_RET | BPF_K, 0),
        BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

/* Drops what is queued (events of before this sample). */
static void drain(int s) {
    char buf[8192];
    while (recv(s, buf, sizeof buf, MSG_DONTWAIT) > 0 || errno == ENOBUFS) {
    }
}

static void sample(int s, int pid) {
    int parent = parent_of(pid);
    if (parent <= 1) {
        printf("error no_parent %d\n", pid);
        return;
    }
    only_fork_of(s, parent);
    drain(s);
    long long cpu0 = cpu_ns();
    long long t0 = now_ns(CLOCK_MONOTONIC);
    if (kill(pid, SIGKILL) < 0) {
        printf("error kill %s\n", strerror(errno));
        return;
    }
    long long fork_ns = -1, exec_ns = -1, events = 0, deadline = t0 + 10000000000LL;
    int child = -1;
    char buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
    struct timeval tv = {.tv_sec = 1};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (exec_ns < 0) {
        if (now_ns(CLOCK_MONOTONIC) > deadline) {
            printf("error timeout\n");
            return;
        }
        ssize_t n = recv(s, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == ENOBUFS) { /* events were lost: the sample cannot be trusted */
                printf("error overrun\n");
                return;
            }
            continue;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n); h = NLMSG_NEXT(h, n)) {
            struct proc_event *e = (struct proc_event *)((struct cn_msg *)NLMSG_DATA(h))->data;
            events++;
            if (e->what == PROC_EVENT_FORK && child < 0 && e->event_data.fork.parent_tgid == parent &&
                e->event_data.fork.child_pid == e->event_data.fork.child_tgid) {
                child = e->event_data.fork.child_tgid;
                fork_ns = (long long)e->timestamp_ns - t0;
            } else if (e->what == PROC_EVENT_EXEC && child > 0 && e->event_data.exec.process_tgid == child) {
                exec_ns = (long long)e->timestamp_ns - t0;
            }
        }
    }
    printf("ok %lld %lld %lld %lld\n", fork_ns, exec_ns, cpu_ns() - cpu0, events);
}

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    int s = listen_socket();
    if (s < 0) {
        printf("error netlink %s (the process events connector needs CAP_NET_ADMIN)\n", strerror(errno));
        return 1;
    }
    printf("ready\n");
    char line[64];
    while (fgets(line, sizeof line, stdin)) /* EOF (the VM closed the port): exit */
        sample(s, atoi(line));
    return 0;
}
