package server

// Hostile scripts against what jails share: the host's files (inodes, page
// cache, locks), the kernel's socket families, IPC objects and /proc, and
// the limits that decide how many threads a script gets. Red-team findings
// of issue 10; docs/SECURITY.md ("Observing other tenants") maps each to its
// defence.

import (
	"os"
	"strings"
	"testing"
	"time"
)

// sysProbe calls raw system calls through ctypes: sc(nr, args...) returns
// [return value, errno].
const sysProbe = `import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(*a):
    ctypes.set_errno(0)
    r = libc.syscall(*[ctypes.c_long(x) if isinstance(x, int) else x for x in a])
    return [r, ctypes.get_errno()]
def tr(f):
    try:
        r = f()
        return 'ok' if r is None else r
    except OSError as e:
        return [type(e).__name__, e.errno]
`

// watchProbe tries every way a jail could watch the shared files: inotify,
// fanotify, dnotify, and the page-cache probes.
const watchProbe = sysProbe + `import mmap
SHARED = os.path.dirname(os.__file__)  # /usr/lib/python3.11, bound into every jail
def main():
    fd = os.open(os.path.join(SHARED, 'json', '__init__.py'), os.O_RDONLY)
    dfd = os.open(SHARED, os.O_RDONLY | os.O_DIRECTORY)
    path = ctypes.c_char_p(SHARED.encode())
    rng = ctypes.create_string_buffer(16)  # struct cachestat_range: whole file
    cst = ctypes.create_string_buffer(64)
    denied = {
        'inotify_init': sc(253),
        'inotify_init1': sc(294, 0),
        'inotify_add_watch': sc(254, -1, path, 0x21),  # IN_ACCESS | IN_OPEN
        'inotify_rm_watch': sc(255, -1, 1),
        'fanotify_init': sc(300, 0, 0),
        'fanotify_mark': sc(301, -1, 1, 0x21, -100, path),
        'dnotify': sc(72, dfd, 1026, 0x80000001),  # fcntl F_NOTIFY, DN_ACCESS | DN_MULTISHOT
        'cachestat': sc(451, fd, rng, cst, 0),
        # preadv2 is ENOSYS: glibc falls back to preadv without flags and
        # fails with ENOTSUP with them.
        'preadv2_nowait': tr(lambda: os.preadv(fd, [bytearray(16)], 0, os.RWF_NOWAIT)),
        'preadv2_raw': sc(327, fd, 0, 0, 0, 0, 8),
        'fadvise_dontneed': tr(lambda: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)),
    }
    # mincore on a mapping of a file the jail cannot write says every page
    # is resident, cached or not (the kernel's own defence): no information.
    data = os.read(fd, 1 << 20)
    size = os.fstat(fd).st_size
    vec = ctypes.create_string_buffer((size + 4095) // 4096)
    libc.mmap.restype = ctypes.c_void_p
    p = libc.mmap(None, ctypes.c_size_t(size), mmap.PROT_READ, mmap.MAP_SHARED, fd, ctypes.c_long(0))
    r = sc(27, ctypes.c_void_p(p), size, vec)
    allowed = {
        'preadv2': tr(lambda: os.preadv(fd, [bytearray(16)], 0, 0)),
        'fadvise_sequential': tr(lambda: os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)),
        'mincore': [r[0], sum(vec.raw) == len(vec.raw) > 0, len(data) > 0],
    }
    return {'denied': denied, 'allowed': allowed}
`

// lockProbe takes every kind of lock on a shared read-only file (the
// stdlib's os.py, the same inode in every jail) and on a file of its own.
const lockProbe = sysProbe + `import fcntl, struct
def main():
    out = {}
    for name, path in (('shared', os.path.join(os.path.dirname(os.__file__), 'os.py')), ('own', '/tmp/own')):
        if name == 'own':
            open(path, 'w').write('x')
        fd = os.open(path, os.O_RDWR if name == 'own' else os.O_RDONLY)
        rd = struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0)
        wr = struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0)
        out[name] = {
            'flock_sh': tr(lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)),
            'flock_ex': tr(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)),
            'F_GETLK': tr(lambda: fcntl.fcntl(fd, fcntl.F_GETLK, wr) and None),
            'F_OFD_GETLK': tr(lambda: fcntl.fcntl(fd, 36, wr) and None),
            'lockf_sh': tr(lambda: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)),
            'F_SETLKW_read': tr(lambda: fcntl.fcntl(fd, fcntl.F_SETLKW, rd) and None),
            'F_SETLK_write': tr(lambda: fcntl.fcntl(fd, fcntl.F_SETLK, wr) and None),
        }
        os.close(fd)  # drops this process's POSIX locks on the file
        fd = os.open(path, os.O_RDWR if name == 'own' else os.O_RDONLY)
        out[name].update({
            'F_OFD_SETLKW_read': tr(lambda: fcntl.fcntl(fd, 38, rd) and None),
            'F_OFD_SETLK_write': tr(lambda: fcntl.fcntl(fd, 37, wr) and None),
        })
        os.close(fd)
    return out
`

// socketProbe creates a socket of every address family the kernel defines
// (include/linux/socket.h, AF_UNSPEC 0 to AF_MCTP 45, and a few past
// AF_MAX), of every type, and a socketpair of every family but AF_UNIX.
const socketProbe = sysProbe + `def main():
    got = {}
    for fam in list(range(0, 47)) + [64, 255, 65535]:
        for typ in (1, 2, 3, 5):  # STREAM, DGRAM, RAW, SEQPACKET
            r = sc(41, fam, typ, 0)
            if r != [-1, 1]:
                got['socket(%d, %d)' % (fam, typ)] = r
        if fam != 1:
            sv = (ctypes.c_int * 2)()
            r = sc(53, fam, 1, 0, sv)
            if r != [-1, 1]:
                got['socketpair(%d)' % fam] = r
    return got
`

// pairProbe: socketpair(AF_UNIX) of every type works; giving one of its
// sockets a name (bind), or pointing it at one (connect), does not.
const pairProbe = sysProbe + `import socket
def main():
    out = {}
    for name, typ in (('stream', socket.SOCK_STREAM), ('dgram', socket.SOCK_DGRAM), ('seqpacket', socket.SOCK_SEQPACKET)):
        a, b = socket.socketpair(socket.AF_UNIX, typ)
        a.send(b'ping')
        out[name] = b.recv(4).decode()
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    out['bind_abstract'] = tr(lambda: a.bind('\0executor-channel'))
    out['connect_abstract'] = tr(lambda: a.connect('\0executor-channel'))
    # connect(AF_UNSPEC) would dissolve the pair, leaving a named datagram
    # socket that anyone could send to.
    out['disconnect'] = sc(42, a.fileno(), ctypes.create_string_buffer(16), 16)
    out['sendto_abstract'] = tr(lambda: a.sendto(b'x', '\0executor-channel'))
    return out
`

// stdlibProbe: what a transform uses of the standard library around
// sockets, processes and threads still works without socket().
const stdlibProbe = `import socket, asyncio, multiprocessing, http.client, urllib.request, urllib.error, json, ssl, sqlite3
import concurrent.futures, subprocess, sys
def child(conn):
    conn.send(sum(conn.recv()))
    conn.close()
async def echo():
    a, b = socket.socketpair()
    r1, w1 = await asyncio.open_connection(sock=a)
    r2, w2 = await asyncio.open_connection(sock=b)
    w1.write(b'over a socketpair\n')
    await w1.drain()
    line = await r2.readline()
    w1.close(); w2.close()
    await asyncio.sleep(0)
    return line.decode().strip()
def main():
    out = {'asyncio': asyncio.run(echo())}
    parent, kid = multiprocessing.Pipe()
    p = multiprocessing.Process(target=child, args=(kid,))
    p.start()
    parent.send([1, 2, 3])
    out['process_and_pipe'] = parent.recv()
    p.join()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        out['thread_pool'] = sum(ex.map(abs, [-1, -2, -3]))
    out['ssl'] = type(ssl.create_default_context()).__name__
    db = sqlite3.connect(':memory:')
    out['sqlite_memory'] = db.execute('select 6 * 7').fetchone()[0]
    db = sqlite3.connect('/tmp/t.db')  # takes POSIX locks on its own file
    db.execute('create table t (x)')
    db.execute('insert into t values (42)')
    db.commit()
    out['sqlite_file'] = db.execute('select x from t').fetchone()[0]
    out['subprocess'] = subprocess.run([sys.executable, '-S', '-c', 'print(1 + 1)'], capture_output=True, text=True).stdout.strip()
    try:
        urllib.request.urlopen('http://example.com/', timeout=1)
        out['urlopen'] = 'connected'
    except urllib.error.URLError as e:
        out['urlopen'] = type(e.reason).__name__
    try:
        http.client.HTTPConnection('127.0.0.1', 80, timeout=1).request('GET', '/')
        out['http_client'] = 'connected'
    except OSError as e:
        out['http_client'] = [type(e).__name__, e.errno]
    return out
`

// futexProbe makes each futex operation that waits, wakes, requeues or
// unlocks, shared and private, on the word at printf's address in libc.so
// (the same inode in every jail), the futex2 calls, and a pthread_join.
const futexProbe = sysProbe + `def main():
    addr = ctypes.cast(libc.printf, ctypes.c_void_p).value & ~3
    word = ctypes.c_uint32.from_address(addr).value
    out = {}
    for name, op in (('wake', 1), ('requeue', 3), ('cmp_requeue', 4), ('wake_op', 5), ('unlock_pi', 7), ('wake_bitset', 10), ('cmp_requeue_pi', 12)):
        out[name] = sc(202, addr, op, 1, 0, addr, word)
    out['wake_private'] = sc(202, addr, 1 | 128, 1, 0, 0, 0)
    ts = (ctypes.c_long * 2)(0, 10000000)  # 10 ms
    out['wait_shared'] = sc(202, addr, 0, word, ts, 0, 0)
    out['wait_bitset_shared'] = sc(202, addr, 9, word, 0, 0, 0xffffffff)
    out['wait_private'] = sc(202, addr, 0 | 128, word, ts, 0, 0)  # ETIMEDOUT: it waited
    # pthread_join waits with a shared futex: it loops on EAGAIN and returns.
    worker = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(lambda arg: __import__('time').sleep(0.05))
    tid = ctypes.c_ulong()
    libc.pthread_create(ctypes.byref(tid), None, worker, None)
    out['pthread_join'] = libc.pthread_join(tid, None)
    for name, nr in (('futex_waitv', 449), ('futex_wake', 454), ('futex_wait', 455), ('futex_requeue', 456)):
        out[name] = sc(nr, 0, 0, 0, 0)
    return out
`

// highBitsProbe repeats denied calls whose rule tests a 32-bit argument
// (an int in the kernel's signature) with bit 32 set: the kernel drops the
// upper half, so a filter that compared all 64 bits would let them through.
const highBitsProbe = sysProbe + `import struct, fcntl
HIGH = 1 << 32
def main():
    fd = os.open(os.path.join(os.path.dirname(os.__file__), 'os.py'), os.O_RDONLY)
    dfd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)
    lk = ctypes.create_string_buffer(struct.pack('hhqqi', fcntl.F_WRLCK, 0, 0, 0, 0))
    addr = ctypes.cast(libc.printf, ctypes.c_void_p).value & ~3
    word = ctypes.c_uint32.from_address(addr).value
    ts = (ctypes.c_long * 2)(0, 10000000)
    sv = (ctypes.c_int * 2)()
    return {
        'F_GETLK': sc(72, fd, HIGH | 5, lk),
        'F_OFD_GETLK': sc(72, fd, HIGH | 36, lk),
        'F_NOTIFY': sc(72, dfd, HIGH | 1026, 1),
        'futex_wake': sc(202, addr, HIGH | 1, 1, 0, 0, 0),
        'futex_wait': sc(202, addr, HIGH | 0, word, ts, 0, 0),
        'fadvise_dontneed': sc(221, fd, 0, 0, HIGH | 4),
        'socketpair_inet': sc(53, HIGH | 2, 1, 0, sv),
        'clone_newuser': sc(56, HIGH | 0x10000000 | 17, 0, 0, 0, 0),
    }
`

// ipcProbe creates SysV shared memory, semaphores and message queues and a
// POSIX message queue (channels between processes sharing an IPC namespace),
// acts on another process's memory, and flushes host file systems.
const ipcProbe = sysProbe + `def main():
    name = ctypes.c_char_p(b'executor-channel')
    fd = os.open(os.path.dirname(os.__file__), os.O_RDONLY)
    return {
        'sync': sc(162),     # host-wide writeback
        'syncfs': sc(306, fd),
        'shmget': sc(29, 0, 4096, 0o1600),   # IPC_PRIVATE, IPC_CREAT | 0600
        'semget': sc(64, 0, 1, 0o1600),
        'msgget': sc(68, 0, 0o1600),
        'mq_open': sc(240, name, 0o102, 0o600, 0),  # O_CREAT | O_RDWR
        'process_madvise': sc(440, -1, 0, 0, 0, 0),
        'process_mrelease': sc(448, -1, 0),
    }
`

// procProbe lists what /proc shows and reads the system-wide files that
// nsjail's default /proc had.
const procProbe = `import os
SYSTEM = ['cmdline', 'config.gz', 'kallsyms', 'locks', 'loadavg', 'uptime', 'stat', 'meminfo', 'cpuinfo',
          'version', 'modules', 'mounts', 'sys/kernel/hostname', 'pressure/cpu', 'sysvipc/shm', 'kmsg', 'vmstat']
def main():
    seen = {}
    for f in SYSTEM:
        try:
            seen[f] = 'read %d' % len(open('/proc/' + f, 'rb').read())
        except OSError as e:
            seen[f] = type(e).__name__
    return {'proc': sorted(os.listdir('/proc')), 'system': seen,
            'mountinfo': open('/proc/self/mountinfo').read(),
            'self_status': 'Uid:' in open('/proc/self/status').read(),
            'self_fds': len(os.listdir('/proc/self/fd')) > 0}
`

// threadProbe starts threads until the kernel says no.
const threadProbe = `import threading
def main():
    ev = threading.Event()
    n, err = 0, None
    try:
        while n < 200:
            threading.Thread(target=ev.wait, daemon=True).start()
            n += 1
    except RuntimeError as e:
        err = str(e)
    ev.set()
    return {'threads': n, 'error': err}
`

// channelSender opens every channel one jail could offer another through
// what they share (file locks and futexes on shared inodes; abstract unix
// names, SysV IPC keys and POSIX queue names where they share namespaces, as
// a cell's children may), then holds them open.
//
// The futex: every jail maps the same libc.so, and a futex on a page of a
// file mapping is keyed by the file's inode and offset, not by the process.
// The sender waits (shared, not FUTEX_PRIVATE_FLAG) on the word at printf's
// address, again and again, and counts the times it is woken; another
// jail's wake at printf's address (the same file offset, whatever the load
// address) would wake it: by FUTEX_WAKE, or by the kernel's own wake when a
// thread whose clear_child_tid points there exits.
const channelSender = sysProbe + `import fcntl, socket, threading, time
class timespec(ctypes.Structure):
    _fields_ = [('sec', ctypes.c_long), ('nsec', ctypes.c_long)]
def main():
    out = {}
    addr = ctypes.cast(libc.printf, ctypes.c_void_p).value & ~3
    word = ctypes.c_uint32.from_address(addr).value
    def wait():
        woken, end = 0, time.time() + 1.1
        while time.time() < end:
            r = sc(202, addr, 0, word, ctypes.byref(timespec(0, 100000000)), 0, 0)  # FUTEX_WAIT, shared
            if r == [0, 0]:
                woken += 1
            elif r != [-1, 110]:  # not a timeout: the wait is refused
                out['futex_wait'] = r
                return
        out['futex_wait'] = 'woken %d times' % woken
    waiter = threading.Thread(target=wait)
    waiter.start()
    fd = os.open(os.path.join(os.path.dirname(os.__file__), 'os.py'), os.O_RDONLY)
    out['flock'] = tr(lambda: fcntl.flock(fd, fcntl.LOCK_EX))
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    out['bind'] = tr(lambda: a.bind('\0executor-covert'))
    out['shm'] = sc(29, 0x5ec2e7, 4096, 0o1666)
    out['mq'] = sc(240, ctypes.c_char_p(b'executor-covert'), 0o102, 0o666, 0)
    time.sleep(1.2)
    waiter.join()
    return out
`

// channelReceiver looks for the sender on each channel, again and again
// for 0.8 s.
const channelReceiver = sysProbe + `import fcntl, socket, threading, time
def main():
    fd = os.open(os.path.join(os.path.dirname(os.__file__), 'os.py'), os.O_RDONLY)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = ctypes.cast(libc.printf, ctypes.c_void_p).value & ~3
    seen = set()
    end = time.time() + 0.8
    exits = 0
    while time.time() < end:
        if sc(202, addr, 1, 1, 0, 0, 0)[0] > 0:  # FUTEX_WAKE, shared
            seen.add('futex')
        if exits < 20:  # a thread that exits with clear_child_tid at printf
            exits += 1
            t = threading.Thread(target=lambda: sc(218, addr))  # set_tid_address
            t.start()
            t.join()
        if tr(lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)) == ['BlockingIOError', 11]:
            seen.add('flock')
        if tr(lambda: a.sendto(b'1', '\0executor-covert')) == 1:
            seen.add('abstract socket')
        if sc(29, 0x5ec2e7, 0, 0)[0] >= 0:
            seen.add('shm')
        if sc(240, ctypes.c_char_p(b'executor-covert'), 0, 0, 0)[0] >= 0:
            seen.add('mq')
        time.sleep(0.01)
    return sorted(seen)
`

func (h *hostile) testJail(t *testing.T) {
	t.Run("two_tenants_find_no_channel_between_them", func(t *testing.T) {
		done := make(chan response, 1)
		go func() { done <- h.execute(t, channelSender) }()
		time.Sleep(300 * time.Millisecond) // the sender holds its channels for 1.2 s
		recv := h.execute(t, channelReceiver)
		send := <-done
		h.expect(t, send, 200, "")
		h.expect(t, recv, 200, "")
		// A shared futex wait is refused (EAGAIN, as if the word had
		// changed): nobody can listen for another jail's wakes.
		jsonEq(t, send.Body["result"], `{"flock": ["OSError", 37], "bind": ["PermissionError", 1], "shm": [-1, 1], "mq": [-1, 1],
			"futex_wait": [-1, 11]}`)
		jsonEq(t, recv.Body["result"], `[]`)
		h.hello(t)
	})

	const eperm = `[-1, 1]`
	h.runCases(t, []hcase{
		// Finding 1: file watches and page-cache probes on shared inodes.
		{name: "file_watches_and_page_cache_probes_are_denied", script: watchProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"denied": {"inotify_init": `+eperm+`, "inotify_init1": `+eperm+`,
				"inotify_add_watch": `+eperm+`, "inotify_rm_watch": `+eperm+`, "fanotify_init": `+eperm+`,
				"fanotify_mark": `+eperm+`, "dnotify": `+eperm+`, "cachestat": `+eperm+`,
				"preadv2_nowait": ["OSError", 95], "preadv2_raw": [-1, 38], "fadvise_dontneed": ["PermissionError", 1]},
				"allowed": {"preadv2": 16, "fadvise_sequential": "ok", "mincore": [0, true, true]}}`)
		}},
		// An uncaught denied call is the script's own error.
		{name: "inotify_uncaught_is_a_runtime_error", script: "import ctypes, os\ndef main():\n    libc = ctypes.CDLL(None, use_errno=True)\n    if libc.inotify_init1(0) < 0:\n        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n",
			status: 422, typ: "runtime_error", msg: "PermissionError"},
		// The flock covert channel: locks on shared inodes are visible to
		// every jail.
		{name: "file_locks_that_another_jail_could_see_are_denied", script: lockProbe, status: 200, check: func(t *testing.T, r response) {
			// flock and the lock queries: ENOLCK everywhere. POSIX and OFD
			// read locks work (they conflict with no one: nobody can hold a
			// write lock on a read-only shared file, EBADF); on its own file
			// a script takes write locks too.
			const enolck = `["OSError", 37]`
			jsonEq(t, r.Body["result"], `{
				"shared": {"flock_sh": `+enolck+`, "flock_ex": `+enolck+`, "F_GETLK": `+enolck+`, "F_OFD_GETLK": `+enolck+`,
					"lockf_sh": "ok", "F_SETLKW_read": "ok", "F_OFD_SETLKW_read": "ok",
					"F_SETLK_write": ["OSError", 9], "F_OFD_SETLK_write": ["OSError", 9]},
				"own": {"flock_sh": `+enolck+`, "flock_ex": `+enolck+`, "F_GETLK": `+enolck+`, "F_OFD_GETLK": `+enolck+`,
					"lockf_sh": "ok", "F_SETLKW_read": "ok", "F_OFD_SETLKW_read": "ok",
					"F_SETLK_write": "ok", "F_OFD_SETLK_write": "ok"}}`)
		}},
		// Finding 2: socket() of every family, socketpair of every family
		// but AF_UNIX.
		{name: "socket_of_every_family_is_denied", script: socketProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{}`)
		}},
		{name: "vsock_uncaught_is_a_runtime_error", script: "import socket\ndef main():\n    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)\n    s.bind((0xFFFFFFFF, 5000))\n",
			status: 422, typ: "runtime_error", msg: "PermissionError"},
		{name: "netlink_uncaught_is_a_runtime_error", script: "import socket\ndef main():\n    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n",
			status: 422, typ: "runtime_error", msg: "PermissionError"},
		{name: "socketpair_works_but_its_sockets_get_no_name", script: pairProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"stream": "ping", "dgram": "ping", "seqpacket": "ping",
				"bind_abstract": ["PermissionError", 1], "connect_abstract": ["PermissionError", 1],
				"disconnect": [-1, 1], "sendto_abstract": ["ConnectionRefusedError", 111]}`)
		}},
		{name: "stdlib_works_without_socket", script: stdlibProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"asyncio": "over a socketpair", "process_and_pipe": 6, "thread_pool": 6,
				"ssl": "SSLContext", "sqlite_memory": 42, "sqlite_file": 42, "subprocess": "2",
				"urlopen": "gaierror", "http_client": ["PermissionError", 1]}`)
		}},
		{name: "shared_futex_wakes_are_denied", script: futexProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"wake": `+eperm+`, "requeue": `+eperm+`, "cmp_requeue": `+eperm+`, "wake_op": `+eperm+`,
				"unlock_pi": `+eperm+`, "wake_bitset": `+eperm+`, "cmp_requeue_pi": `+eperm+`,
				"wake_private": [0, 0], "wait_shared": [-1, 11], "wait_bitset_shared": [-1, 11], "wait_private": [-1, 110], "pthread_join": 0,
				"futex_waitv": `+eperm+`, "futex_wake": `+eperm+`, "futex_wait": `+eperm+`, "futex_requeue": `+eperm+`}`)
		}},
		{name: "denied_calls_with_high_argument_bits_are_still_denied", script: highBitsProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"F_GETLK": [-1, 37], "F_OFD_GETLK": [-1, 37], "F_NOTIFY": `+eperm+`,
				"futex_wake": `+eperm+`, "futex_wait": [-1, 11], "fadvise_dontneed": `+eperm+`,
				"socketpair_inet": `+eperm+`, "clone_newuser": `+eperm+`}`)
		}},
		{name: "sysv_ipc_message_queues_and_host_wide_sync_are_denied", script: ipcProbe, status: 200, check: func(t *testing.T, r response) {
			jsonEq(t, r.Body["result"], `{"sync": `+eperm+`, "syncfs": `+eperm+`, "shmget": `+eperm+`, "semget": `+eperm+`, "msgget": `+eperm+`,
				"mq_open": `+eperm+`, "process_madvise": `+eperm+`, "process_mrelease": `+eperm+`}`)
		}},
		// Finding 8: the thread limit is --max-procs (32: the main thread
		// and 31 more), not the address space.
		{name: "threads_start_up_to_max_procs", script: threadProbe, status: 200, check: func(t *testing.T, r response) {
			var got struct {
				Threads int
				Error   string
			}
			result(t, r, &got)
			if got.Threads < 28 || got.Threads > 31 || got.Error != "can't start new thread" {
				t.Fatalf("started %d threads, then %q; want 28 to 31, then \"can't start new thread\"", got.Threads, got.Error)
			}
			t.Logf("%d threads started, then %q", got.Threads, got.Error)
		}},
		// ... while RLIMIT_AS still stops one huge allocation at once.
		{name: "allocation_over_address_space_still_fails_at_once", script: "def main():\n    return len(bytearray(2 << 30))\n",
			status: 422, typ: "memory_limit"},
		// Finding 9: /proc shows the jail's own processes only, and the
		// worker's mount source no server path.
		{name: "proc_shows_no_host_details", script: procProbe, status: 200, check: func(t *testing.T, r response) {
			var got struct {
				Proc       []string
				System     map[string]string
				Mountinfo  string
				SelfStatus bool `json:"self_status"`
				SelfFds    bool `json:"self_fds"`
			}
			result(t, r, &got)
			if strings.Join(got.Proc, " ") != "1 self thread-self" {
				t.Errorf("/proc holds %v", got.Proc)
			}
			for f, v := range got.System {
				if v != "FileNotFoundError" {
					t.Errorf("/proc/%s: %s", f, v)
				}
			}
			if !got.SelfStatus || !got.SelfFds {
				t.Errorf("/proc/self/status or /proc/self/fd is gone: %+v", got)
			}
			for _, leak := range []string{os.Getenv("TMPDIR"), "executor-pyworker", "executor-hostile"} {
				if leak != "" && strings.Contains(got.Mountinfo, leak) {
					t.Errorf("/proc/self/mountinfo shows %q:\n%s", leak, got.Mountinfo)
				}
			}
		}},
		// The new /proc is read-only, like nsjail's.
		{name: "proc_is_read_only", script: "def main():\n    open('/proc/self/oom_score_adj', 'w').write('1000')\n",
			status: 422, typ: "runtime_error", msg: "Read-only file system"},
	})
}
