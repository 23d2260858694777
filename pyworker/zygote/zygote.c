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
// A new child makes itself a sandbox here, in C, before the interpreter
// runs again (sandbox, below): the same steps in Python wrote (copied)
// another ~60 of the zygote's pages per child for objects, frames and
// calls that only set up the sandbox.
//
// zyg_serve returns 1 in a new child, sandboxed, 0 when the server closed
// the control socket, and -N with a message in err on a failure that must
// end the cell (worker.py exits with status N).
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
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

// What every child's sandbox needs, copied once by zyg_init.
#define MAX_RLIMITS 16
static char tmp_opts[128];
static int nrlimits;
static int rlimit_res[MAX_RLIMITS];
static rlim_t rlimit_val[MAX_RLIMITS];
static struct sock_fprog fprog;

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

// child_fail tells the server why the set-up of a child failed (fd 3 is its
// result socket by then) and ends the child.
static void child_fail(const char *what, int e)
{
	char msg[256];
	int n = snprintf(msg, sizeof msg, "SSE-FAIL cell child set-up: %s: %s\n", what, strerror(e));
	if (n > 0 && write(3, msg, n < (int)sizeof msg ? n : (int)sizeof msg - 1) < 0) {
		// nothing more to say: the server sees the child end unready
	}
	_exit(1);
}

// close_from_4 closes every descriptor above 3: close_range, or before
// Linux 5.9 each one /proc/self/fd lists.
static int close_from_4(void)
{
	if (syscall(SYS_close_range, 4, ~0U, 0) == 0)
		return 0;
	if (errno != ENOSYS)
		return -1;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int self = dirfd(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		int fd = atoi(e->d_name); // 0 for "." and ".."
		if (fd > 3 && fd != self)
			close(fd);
	}
	closedir(d);
	return 0;
}

// sandbox runs in a new child, pid 1 of its own pid namespace, before any
// Python: it makes the child a sandbox, in this order, or ends it.
// docs/SECURITY.md ("Isolation modes") lists the steps; the server checks
// the result in /proc/<pid>/status before it hands the child a request.
static void sandbox(const struct zyg_child_args *a)
{
	// Step: fds. 3 becomes the child's result socket (replacing the
	// control socket: no child holds that past here), 0 its stdin pipe;
	// until the run's output pipes arrive, 1 and 2 are the read end of
	// stdin, so writes fail (never the cell's own stdio). Nothing else.
	if (dup2(a->res_fd, 3) != 3)
		_exit(1);
	if (dup2(a->stdin_fd, 0) != 0 || dup2(a->stdin_fd, 1) != 1 || dup2(a->stdin_fd, 2) != 2)
		child_fail("dup2", errno);
	if (close_from_4() != 0)
		child_fail("close the zygote's other descriptors", errno);
	// Step: new mount, uts and ipc namespaces (the pid namespace is its
	// own already: it is its pid 1).
	if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) != 0)
		child_fail("unshare", errno);
	// Step: mounts of its own: nothing propagates back to the cell; a
	// private tmpfs /tmp; a /proc of its own pid namespace, with a jail's
	// options (jailproc hardeningArgs): only the process folders, other
	// uids' processes invisible, read-only.
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		child_fail("make / private", errno);
	if (mount("none", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts) != 0)
		child_fail("mount /tmp", errno);
	if (mount("proc", "/proc", "proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
		  "subset=pid,hidepid=invisible") != 0)
		child_fail("mount /proc", errno);
	// Step: rlimits, as nsjail sets them for a jail.
	for (int i = 0; i < nrlimits; i++) {
		struct rlimit rl = {rlimit_val[i], rlimit_val[i]};
		if (setrlimit(rlimit_res[i], &rl) != 0)
			child_fail("setrlimit", errno);
	}
	// Step: its own uid and gid, no supplementary groups (the capability
	// bounding set is empty already: the zygote emptied its own). Leaving
	// uid 0 clears the permitted and effective capability sets.
	if (setgroups(0, NULL) != 0)
		child_fail("setgroups", errno);
	if (setresgid(a->uid, a->uid, a->uid) != 0)
		child_fail("setresgid", errno);
	if (setresuid(a->uid, a->uid, a->uid) != 0)
		child_fail("setresuid", errno);
	// Step: no inheritable capabilities either.
	struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof data);
	if (syscall(SYS_capset, &hdr, data) != 0)
		child_fail("capset", errno);
	// The uid change made the process non-dumpable, which hides its own
	// /proc/self files (environ, fd, ...) from it. A jail's worker, fresh
	// from execve, is dumpable; so is this child again. Only its own uid
	// could use that, and the uid is its alone (ptrace is denied anyway).
	if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0)
		child_fail("dumpable", errno);
	// Step: no new privileges, then the child's seccomp filter, on top of
	// the cell's. From here on nothing can be undone.
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		child_fail("no_new_privs", errno);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0) != 0)
		child_fail("seccomp", errno);
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
		sandbox(out);
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

// The interpreter's machine code on 2 MiB pages.
//
// Each child starts with an empty TLB and, on our virtualised machines, a
// page walk is dear; a run executes code spread over most of the
// interpreter's ~2.7 MiB of it, which on 4 KiB pages takes ~700 TLB entries
// and, in a new child, ~40 page faults (fork copies no page-table entries of
// an unmodified file mapping: each child maps the code again, 16 pages per
// fault). So the zygote copies that code, once, onto anonymous memory backed
// by transparent huge pages and moves the copy over the original mapping, at
// the same addresses: a fork copies two page-middle-directory entries, and a
// child's code needs two TLB entries. Measured (closed loop c=16, hello,
// 3 interleaved pairs): 2.77/2.75/2.74 -> 2.58/2.59/2.51 ms of CPU per run.
//
// A huge page is 2 MiB-aligned and all of it has one protection, so the span
// moved is the code rounded out to 2 MiB within the file's read-only
// mappings around it: with the Debian binary, its ELF headers and 1.2 MiB of
// .rodata become executable too (not writable). That gives a script nothing:
// it can map executable memory of its own (docs/SECURITY.md, "Isolation
// modes"). Without transparent huge pages (or without a 2 MiB span) nothing
// is moved: 4 KiB anonymous pages measured no better than the file's.
// Every step before the move leaves the original untouched, and the move
// (mremap) replaces it at once or not at all, with the same bytes.

#define HUGE (2UL << 20)

struct mapping {
	unsigned long lo, hi, ino;
	char perm[8];
	char path[256];
};

// read_maps reads up to cap mappings of /proc/self/maps, in address order.
static int read_maps(struct mapping *m, int cap)
{
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return 0;
	char line[512];
	int n = 0;
	while (n < cap && fgets(line, sizeof line, f)) {
		m[n].path[0] = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu %255s", &m[n].lo, &m[n].hi, m[n].perm, &m[n].ino,
			   m[n].path) >= 4)
			n++;
	}
	fclose(f);
	return n;
}

// extends reports whether b continues a's file read-only.
static int extends(const struct mapping *a, const struct mapping *b)
{
	return a->ino == b->ino && strcmp(a->path, b->path) == 0 && b->perm[1] != 'w';
}

// huge_kib is the AnonHugePages of the mapping at lo (KiB), -1 if unknown.
static long huge_kib(unsigned long lo)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	if (!f)
		return -1;
	char line[512];
	long kib = -1;
	int in = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
			in = a == lo;
		else if (in && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

// huge_text moves the code that contains pc onto huge pages (see above).
// It returns 1 when it did, 0 when it left the mapping as it was.
static int huge_text(unsigned long pc)
{
	enum { cap = 512 };
	struct mapping *m = malloc(cap * sizeof *m);
	if (!m)
		return 0;
	int n = read_maps(m, cap), k = -1;
	for (int i = 0; i < n; i++)
		if (m[i].lo <= pc && pc < m[i].hi && strcmp(m[i].perm, "r-xp") == 0 && m[i].path[0] == '/')
			k = i;
	if (k < 0) {
		free(m);
		return 0;
	}
	// The file's read-only mappings adjacent to its code.
	unsigned long lo = m[k].lo, hi = m[k].hi;
	for (int i = k - 1; i >= 0 && m[i].hi == m[i + 1].lo && extends(&m[k], &m[i]); i--)
		lo = m[i].lo;
	for (int i = k + 1; i < n && m[i].lo == m[i - 1].hi && extends(&m[k], &m[i]); i++)
		hi = m[i].hi;
	unsigned long code_lo = m[k].lo, code_hi = m[k].hi;
	free(m);
	// The code rounded out to 2 MiB, or in where that would leave the file.
	unsigned long from = code_lo & ~(HUGE - 1), to = (code_hi + HUGE - 1) & ~(HUGE - 1);
	if (from < lo)
		from += HUGE;
	if (to > hi)
		to -= HUGE;
	if (to <= from)
		return 0;
	unsigned long len = to - from;
	// A 2 MiB-aligned anonymous area, filled with the code.
	char *raw = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return 0;
	unsigned long r = (unsigned long)raw, at = (r + HUGE - 1) & ~(HUGE - 1);
	if (at > r)
		munmap(raw, at - r);
	if (r + HUGE > at)
		munmap((void *)(at + len), r + HUGE - at);
	void *copy = (void *)at;
	if (madvise(copy, len, MADV_HUGEPAGE) != 0)
		goto drop;
	memcpy(copy, (void *)from, len);
	// Only huge pages are worth it (see above). The kernel gave them at
	// fault time, or none: THP off ("never") or no free huge page.
	if (huge_kib(at) * 1024 != (long)len || mprotect(copy, len, PROT_READ | PROT_EXEC) != 0)
		goto drop;
	if (mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)from) == MAP_FAILED)
		goto drop;
	return 1;
drop:
	munmap(copy, len);
	return 0;
}

// zyg_linger is how a child ends once its result is sent (worker.py,
// _finish): it waits until the server kills it (its teardown, after the
// server has lowered the CPU weight of the child's cgroup; the pool holds
// it back while other runs are in flight, up to 30 ms) or closes its end of
// the result socket, then exits. Tearing a child down (its address space,
// its namespaces) costs ~0.3 ms of CPU; started at once, it ran at a running
// request's weight and took CPU from the requests next to it (a burst of 32
// spent 18 % of its CPU on exits). Called through ctypes.PyDLL, it holds the
// interpreter's lock meanwhile: no thread of the script runs after the
// result.
void zyg_linger(void)
{
	char c;
	ssize_t n;
	while ((n = recv(3, &c, 1, 0)) > 0 || (n < 0 && errno == EINTR)) {
	}
	_exit(0);
}

// zyg_init allocates the tables and copies what every child's sandbox needs,
// once, before the first fork: the /tmp mount options, the rlimits (each
// soft = hard) and the child's seccomp filter (n instructions); and it moves
// the interpreter's code onto huge pages where it can (huge_text). It returns
// 0, or -1 on a configuration that does not fit or no memory.
int zyg_init(const char *opts, int n, const int *res, const unsigned long long *val,
	     unsigned short filter_len, const void *filter)
{
	if (!opts || strlen(opts) >= sizeof tmp_opts || n < 0 || n > MAX_RLIMITS || filter_len == 0 || !filter)
		return -1;
	strcpy(tmp_opts, opts);
	nrlimits = n;
	for (int i = 0; i < n; i++) {
		rlimit_res[i] = res[i];
		rlimit_val[i] = (rlim_t)val[i];
	}
	struct sock_filter *f = malloc(filter_len * sizeof *f);
	if (!f)
		return -1;
	memcpy(f, filter, filter_len * sizeof *f);
	fprog.len = filter_len;
	fprog.filter = f;
	huge_text((unsigned long)&PyOS_AfterFork_Child);
	caplive = 64;
	lives = calloc(caplive, sizeof *lives);
	pfds = calloc(caplive + 1, sizeof *pfds);
	return lives && pfds ? 0 : -1;
}
