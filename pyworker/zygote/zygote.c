// The zygote's fork loop (cell isolation), called once from worker.py
// through ctypes.PyDLL, so with the GIL held and nothing else running.
//
// Why C: after every fork each page the zygote writes is copied, as the
// new child still shares it. The Python loop wrote 60-75 pages per fork
// (reference counts, frames, allocations); this loop touches its stack,
// the table below and the kernel's buffers, and never the interpreter's
// memory, which the children share. The protocol is worker.py's
// (jailproc/cell.go):
//
//	server -> zygote  "F <id> <uid>" + SCM_RIGHTS [stdin read end, result socket]
//	zygote -> server  "X <id> <wait status> <cpu us> <maxrss KiB>" per child
//
// zyg_serve returns 1 in a new child (what it got in *out), 0 when the
// server closed the control socket, and -N with a message in err on a
// failure that must end the cell (worker.py exits with status N).
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// The interpreter's own fork hook (what os.fork runs in a child): it
// re-creates the GIL and the import lock for the one thread left.
extern void PyOS_AfterFork_Child(void);

struct zyg_child_args {
	char id[24]; // decimal, NUL-terminated
	int uid;
	int stdin_fd;
	int res_fd;
};

struct live {
	int pid, pidfd;
	char id[24];
};

static struct live *lives;
static int nlive, caplive;
static struct pollfd *pfds;

static int fail(char *err, size_t cap, int code, const char *what, int e)
{
	if (e)
		snprintf(err, cap, "%s: %s", what, strerror(e));
	else
		snprintf(err, cap, "%s", what);
	return -code;
}

// report tells the server how a child ended; the pid is looked up in lives.
static int report(int ctrl, int pid, int status, const struct rusage *ru, char *err, size_t cap)
{
	for (int i = 0; i < nlive; i++) {
		if (lives[i].pid != pid)
			continue;
		long long cpu = (long long)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1000000 +
				ru->ru_utime.tv_usec + ru->ru_stime.tv_usec;
		char msg[128];
		int n = snprintf(msg, sizeof msg, "X %s %d %lld %ld", lives[i].id, status, cpu, ru->ru_maxrss);
		close(lives[i].pidfd);
		lives[i] = lives[--nlive];
		if (send(ctrl, msg, n, MSG_NOSIGNAL) != n && errno != EPIPE)
			return fail(err, cap, 6, "report a child's exit", errno);
		return 0;
	}
	return 0; // not ours (cannot happen: every child is in lives)
}

static int reap(int ctrl, char *err, size_t cap)
{
	for (;;) {
		int status;
		struct rusage ru;
		int pid = wait4(-1, &status, WNOHANG, &ru);
		if (pid <= 0)
			return 0; // none left to reap now (or ECHILD)
		int r = report(ctrl, pid, status, &ru, err, cap);
		if (r)
			return r;
	}
}

// parse checks "F <digits> <digits>" and copies the fields.
static int parse(const char *msg, int n, struct zyg_child_args *out)
{
	if (n < 5 || msg[0] != 'F' || msg[1] != ' ')
		return -1;
	int i = 2, j = 0;
	while (i < n && msg[i] >= '0' && msg[i] <= '9' && j < (int)sizeof out->id - 1)
		out->id[j++] = msg[i++];
	out->id[j] = 0;
	if (j == 0 || i >= n || msg[i] != ' ')
		return -1;
	i++;
	long uid = 0;
	int digits = 0;
	while (i < n && msg[i] >= '0' && msg[i] <= '9' && digits < 9) {
		uid = uid * 10 + (msg[i++] - '0');
		digits++;
	}
	if (digits == 0 || i != n)
		return -1;
	out->uid = (int)uid;
	return 0;
}

// command handles one message on ctrl: 1 in a new child, 0 to go on,
// 2 when the server closed the socket, negative on failure.
static int command(int ctrl, int pidns, struct zyg_child_args *out, char *err, size_t cap)
{
	char msg[256];
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(2 * sizeof(int))];
	} cm;
	struct iovec iov = {msg, sizeof msg};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
	ssize_t n = recvmsg(ctrl, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		return fail(err, cap, 6, "read a fork request", errno);
	}
	int fds[2], nfds = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (int i = 0; i < k; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
			if (nfds < 2)
				fds[nfds] = fd;
			else
				close(fd);
			nfds++;
		}
	}
	if (n == 0 && nfds == 0)
		return 2;
	if (nfds != 2 || (mh.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) || parse(msg, (int)n, out) != 0) {
		snprintf(err, cap, "malformed fork request %.*s with %d descriptors", n > 64 ? 64 : (int)n, msg, nfds);
		return -5;
	}
	out->stdin_fd = fds[0];
	out->res_fd = fds[1];
	if (nlive == caplive) {
		int c = caplive ? 2 * caplive : 64;
		struct live *l = realloc(lives, c * sizeof *l);
		struct pollfd *p = realloc(pfds, (c + 1) * sizeof *p);
		if (l)
			lives = l;
		if (p)
			pfds = p;
		if (!l || !p)
			return fail(err, cap, 6, "grow the table of children", ENOMEM);
		caplive = c;
	}
	// The child is pid 1 of a pid namespace of its own: unshare(NEWPID)
	// makes the next child the first process of a new one; setns back to
	// the zygote's own right after the fork makes the one after that start
	// another. One fork per child, and the zygote is its parent (it reaps it).
	if (unshare(CLONE_NEWPID) != 0)
		return fail(err, cap, 6, "unshare(CLONE_NEWPID)", errno);
	pid_t pid = fork();
	if (pid == 0) {
		PyOS_AfterFork_Child();
		return 1;
	}
	int forkErr = errno;
	if (setns(pidns, CLONE_NEWPID) != 0)
		return fail(err, cap, 7, "setns back to its own pid namespace", errno);
	if (pid < 0)
		return fail(err, cap, 6, "fork", forkErr);
	close(out->stdin_fd);
	close(out->res_fd);
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return fail(err, cap, 8, "pidfd_open of its child", errno);
	lives[nlive].pid = pid;
	lives[nlive].pidfd = pidfd;
	memcpy(lives[nlive].id, out->id, sizeof out->id);
	nlive++;
	return 0;
}

int zyg_serve(int ctrl, int pidns, struct zyg_child_args *out, char *err, size_t cap)
{
	for (;;) {
		pfds[0].fd = ctrl;
		pfds[0].events = POLLIN;
		for (int i = 0; i < nlive; i++) {
			pfds[i + 1].fd = lives[i].pidfd;
			pfds[i + 1].events = POLLIN;
		}
		int n = poll(pfds, nlive + 1, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return fail(err, cap, 6, "poll", errno);
		}
		int exited = 0;
		for (int i = 1; i <= nlive; i++)
			exited |= pfds[i].revents != 0;
		if (exited) {
			int r = reap(ctrl, err, cap);
			if (r)
				return r;
		}
		if (pfds[0].revents) {
			int r = command(ctrl, pidns, out, err, cap);
			if (r == 1 || r < 0)
				return r;
			if (r == 2)
				return 0;
		}
	}
}

// zyg_init allocates the tables once, before the first fork.
int zyg_init(void)
{
	caplive = 64;
	lives = calloc(caplive, sizeof *lives);
	pfds = calloc(caplive + 1, sizeof *pfds);
	return lives && pfds ? 0 : -1;
}
