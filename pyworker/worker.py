# Secure Script Executor worker, protocol v1: see docs/PROTOCOL.md.
#
# Run as: python3 -I -S -B -X utf8 /opt/pyworker/worker.pyc 'v1;<preload>;<paths>'
# (this source, compiled once by the server with the jail's interpreter), with
# fd 3 a unix stream socket to the server. One request, one result, exit.
#
# Start-up cost is paid on every spawn, so nothing is imported before the ready
# line except modules the interpreter has already loaded (sys, posix, builtins,
# _io) and two C modules (_json, _socket). No json, socket, traceback or re.
#
# The script runs in this process, so this worker is no security boundary: a
# script can reach the worker's own globals (sys._getframe(1).f_globals),
# replace _encode or write to fd 3, and so forge its own result. The boundaries
# are the jail (nsjail, seccomp, cgroups, a uid of its own) and the server,
# which decodes every result frame as hostile input and trusts it only as
# "what this script said" about its own run. What the code below does
# protect against is accidents: every function the worker needs is bound
# before user code runs, and every step that touches user objects is guarded,
# so a script that replaces builtins, sys attributes or module functions in
# the ordinary course of things does not spoil its own result.
import sys
import posix
import builtins

# Functions defined from here on look builtins up in this private copy (a
# function captures globals['__builtins__'] when it is created), so a script
# that does `builtins.len = None` cannot break the worker.
__builtins__ = dict(builtins.__dict__)

_write = posix.write
_read = posix.read
_close = posix.close
_dup2 = posix.dup2
_exit = posix._exit
_setpriority = posix.setpriority
_PRIO_PROCESS = posix.PRIO_PROCESS
_settrace = sys.settrace
_setprofile = sys.setprofile
_setrecursionlimit = sys.setrecursionlimit
_getrecursionlimit = sys.getrecursionlimit
_modules = sys.modules
_Module = type(sys)
_str_str = str.__str__
_int_repr = int.__repr__
_float_repr = float.__repr__
_float_float = float.__float__
_stdout = sys.stdout  # the interpreter's own stdio objects, whatever the
_stderr = sys.stderr  # script later does to sys.stdout / sys.stderr
_dict_items = dict.items
_list_iter = list.__iter__
_tuple_iter = tuple.__iter__
_type_name = type.__dict__['__qualname__'].__get__
_type_module = type.__dict__['__module__'].__get__
_exc_cause = BaseException.__dict__['__cause__'].__get__
_exc_context = BaseException.__dict__['__context__'].__get__
_exc_suppress = BaseException.__dict__['__suppress_context__'].__get__
_exc_tb = BaseException.__dict__['__traceback__'].__get__
_exc_str = BaseException.__str__

MAX_DEPTH = 200
MAX_INT_DIGITS = 4300  # CPython's default sys.get_int_max_str_digits()
MSG_CAP = 2000  # characters kept of an error message
TB_CAP = 6000  # characters kept of a traceback (its tail)
# The error types this worker reports (docs/PROTOCOL.md section 5). A Go test
# checks them against pyworker's list, which comes from package executor.
ERROR_TYPES = ('syntax_error', 'missing_main', 'runtime_error', 'result_not_json', 'memory_limit', 'output_limit')
# Precomputed, so that they can be sent when building any payload failed: a
# real MemoryError, and any other failure of the worker itself.
MEMORY_PAYLOAD = b'{"ok":false,"error":{"type":"memory_limit","message":"MemoryError"}}'
WORKER_FAILED_PAYLOAD = b'{"ok":false,"error":{"type":"runtime_error","message":"the worker failed"}}'


def _fail_start(msg):
    # One line, whatever the exception text held.
    line = ('SSE-FAIL ' + msg.replace('\r', ' ').replace('\n', ' ')[:2000] + '\n')
    try:
        _write(3, line.encode('utf-8', 'backslashreplace'))
    finally:
        _exit(1)


def _die(code, msg):
    # The protocol has no frame for "the server broke the protocol" or "the
    # result channel is gone": say why on stderr and exit; the server reports
    # a run without a result.
    try:
        _write(2, ('pyworker: ' + msg + '\n').encode('utf-8', 'backslashreplace'))
    except BaseException:
        pass
    _exit(code)


try:
    import _json
    import _socket
except BaseException as e:
    _fail_start('_json/_socket: %s: %s' % (type(e).__name__, e))

_esc = _json.encode_basestring_ascii


class _NotJSON(Exception):
    pass


class _TooBig(Exception):
    pass


class _ScanContext:
    # The attributes _json.make_scanner reads; strict JSON only.
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo = None

    def parse_constant(name):
        raise ValueError('%s is not allowed in strict JSON' % name)

    parse_constant = staticmethod(parse_constant)


_scan = _json.make_scanner(_ScanContext())


def _decode(text):
    i = len(text) - len(text.lstrip(' \t\r\n'))
    try:
        value, end = _scan(text, i)
    except StopIteration as e:
        raise ValueError('expected a JSON value at offset %d' % e.value)
    if text[end:].strip(' \t\r\n'):
        raise ValueError('extra data at offset %d' % end)
    return value


def _article(name):
    return ('an ' if name[:1] in 'aeiouAEIOU' else 'a ') + name


def _tname(t):
    try:
        name = _type_name(t)
        if type(name) is str:
            return name
    except BaseException:
        pass
    return '?'


def _path_str(path):
    s = 'result' + ''.join(['[%d]' % p if type(p) is int else '[' + repr(p[:40] + '...' if len(p) > 40 else p) + ']' for p in path])
    if len(s) > 300:
        s = s[:150] + '...' + s[-150:]
    return s


def _encode(value, limit):
    """Validates value as strict JSON and returns it as ASCII-only text.

    Raises _NotJSON(message) or _TooBig(). One pass: validation, encoding and
    the size check happen together, so an over-large result is abandoned as
    soon as it is known to be too big. Subclasses of the JSON types are read
    through the base type's own methods, never their (user) overrides.
    """
    out = []
    append = out.append
    path = []
    active = set()  # ids of the containers on the current path: cycles
    size = 0

    def walk(v, depth):
        nonlocal size
        t = type(v)
        if t is str:
            s = _esc(v)
        elif v is None:
            s = 'null'
        elif v is True:
            s = 'true'
        elif v is False:
            s = 'false'
        elif t is int or (t is not bool and issubclass(t, int)):
            try:
                s = _int_repr(v)
            except ValueError:  # over sys.get_int_max_str_digits()
                raise _NotJSON('%s is an int too large to convert to text' % _path_str(path))
            if len(s) > MAX_INT_DIGITS and len(s) - (s[0] == '-') > MAX_INT_DIGITS:
                # The script may have lifted sys.set_int_max_str_digits; JSON
                # readers (Python's among them) still refuse such a literal.
                raise _NotJSON('%s is an int with more than %d digits' % (_path_str(path), MAX_INT_DIGITS))
        elif t is float:
            if v - v != 0.0:
                raise _NotJSON('%s is a float that is not finite (%s)' % (_path_str(path), _float_repr(v)))
            s = _float_repr(v)
        elif t is dict or t is list or t is tuple:
            container(v, t, depth)
            return
        elif issubclass(t, str):
            s = _esc(_str_str(v))
        elif issubclass(t, float):
            v = _float_float(v)  # never the subclass's own __sub__/__repr__
            if v - v != 0.0:
                raise _NotJSON('%s is a float that is not finite (%s)' % (_path_str(path), _float_repr(v)))
            s = _float_repr(v)
        elif issubclass(t, dict):
            container(v, dict, depth)
            return
        elif issubclass(t, list):
            container(v, list, depth)
            return
        elif issubclass(t, tuple):
            container(v, tuple, depth)
            return
        else:
            raise _NotJSON('%s is %s' % (_path_str(path), _article(_tname(t))))
        size += len(s)
        if size > limit:
            raise _TooBig()
        append(s)

    def container(v, base, depth):
        nonlocal size
        if depth >= MAX_DEPTH:
            raise _NotJSON('%s is nested deeper than %d levels' % (_path_str(path), MAX_DEPTH))
        key = id(v)
        if key in active:
            raise _NotJSON('%s contains itself (a reference cycle)' % _path_str(path))
        active.add(key)
        if base is dict:
            append('{')
            first = True
            names = set()  # the keys as written: two may collide
            for k, x in _dict_items(v):
                kt = type(k)
                if kt is not str:
                    if not issubclass(kt, str):
                        raise _NotJSON('%s has a key of type %s (JSON object keys are strings)' % (_path_str(path), _tname(kt)))
                    k = _str_str(k)
                s = _esc(k)
                if s in names:
                    # A str subclass whose hash or == lies, or a surrogate
                    # pair next to the character it encodes.
                    path.append(k)
                    raise _NotJSON('%s is a duplicate key: another key of the same dict is the same JSON string' % _path_str(path))
                names.add(s)
                if first:
                    size += len(s) + 1
                    append(s)
                else:
                    size += len(s) + 2
                    append(',')
                    append(s)
                append(':')
                first = False
                path.append(k)
                walk(x, depth + 1)
                path.pop()
            append('}')
        else:
            append('[')
            i = 0
            for x in (_list_iter(v) if base is list else _tuple_iter(v)):
                if i:
                    append(',')
                    size += 1
                path.append(i)
                walk(x, depth + 1)
                path.pop()
                i += 1
            append(']')
        size += 2
        if size > limit:
            raise _TooBig()
        active.discard(key)

    walk(value, 0)
    return ''.join(out)


def _exc_line(e):
    """CPython's last traceback line: 'module.QualName: message'."""
    t = type(e)
    name = _tname(t)
    try:
        mod = _type_module(t)
        if type(mod) is str and mod not in ('__main__', 'builtins'):
            name = mod + '.' + name
    except BaseException:
        pass
    try:
        msg = str(e)
        if type(msg) is not str:
            msg = _str_str(msg)
    except BaseException:
        msg = '<exception str() failed>'
    if len(msg) > MSG_CAP:
        msg = msg[:MSG_CAP] + '...'
    line = name + ': ' + msg if msg else name
    try:
        notes = e.__dict__.get('__notes__') if type(e.__dict__) is dict else None
        if type(notes) is list:
            for n in notes[:10]:
                if type(n) is str:
                    line += '\n' + n[:MSG_CAP]
    except BaseException:
        pass
    return line


class _Source:
    def __init__(self, script):
        self.script = script
        self.lines = None

    def line(self, n):
        if self.lines is None:
            text = self.script.decode('utf-8', 'replace')
            self.lines = text.replace('\r\n', '\n').replace('\r', '\n').split('\n')
        if type(n) is int and 1 <= n <= len(self.lines):
            return self.lines[n - 1].strip()
        return ''


def _frames(e, src):
    """Formats e's traceback, keeping <script> frames only; returns (text, last line)."""
    out = []
    last = 0
    prev = None
    repeat = 0
    try:
        tb = _exc_tb(e)
    except BaseException:
        tb = None
    n = 0
    while tb is not None and n < 100000:
        n += 1
        code = tb.tb_frame.f_code
        lineno = tb.tb_lineno
        tb = tb.tb_next
        if code.co_filename != '<script>':
            continue
        if type(lineno) is not int:
            lineno = 0
        key = (lineno, code.co_name)
        if key == prev:
            repeat += 1
            if repeat >= 3:
                continue
        else:
            if repeat > 3:
                out.append('  [Previous line repeated %d more times]\n' % (repeat - 3))
            prev = key
            repeat = 0
        last = lineno
        out.append('  File "<script>", line %d, in %s\n' % (lineno, code.co_name))
        s = src.line(lineno)
        if s:
            out.append('    ' + s + '\n')
    if repeat > 3:
        out.append('  [Previous line repeated %d more times]\n' % (repeat - 3))
    text = ''.join(out)
    if len(text) > TB_CAP:
        text = '  ...\n' + text[-TB_CAP:].split('\n', 1)[-1]
    return text, last


def _traceback(exc, src):
    """CPython-like traceback text of exc (and its chain); returns (text, line, last line)."""
    chain = []
    seen = set()
    e = exc
    how = None
    while e is not None and id(e) not in seen and len(chain) < 8:
        seen.add(id(e))
        chain.append((e, how))
        try:
            cause = _exc_cause(e)
            if cause is not None:
                e, how = cause, 'The above exception was the direct cause of the following exception:'
                continue
            ctx = _exc_context(e)
            if ctx is not None and not _exc_suppress(e):
                e, how = ctx, 'During handling of the above exception, another exception occurred:'
                continue
        except BaseException:
            pass
        e = None
    parts = []
    line = 0
    last_line = ''
    for i in range(len(chain) - 1, -1, -1):
        e, how = chain[i]
        frames, fline = _frames(e, src)
        eline = _exc_line(e)
        if frames:
            parts.append('Traceback (most recent call last):\n' + frames)
        parts.append(eline + '\n')
        if i:
            parts.append('\n' + how + '\n\n')
        else:
            line, last_line = fline, eline
    text = ''.join(parts)
    if len(text) > TB_CAP:
        text = 'Traceback (most recent call last):\n  ...\n' + text[-TB_CAP:].split('\n', 1)[-1]
    return text, line, last_line


def _syntax(e, src):
    """CPython-like report of a compile error; returns (text, line, last line)."""
    eline = _exc_line(e) if not isinstance(e, SyntaxError) else _tname(type(e)) + ': ' + str(e.msg or 'invalid syntax')
    lineno = e.lineno if isinstance(e, SyntaxError) and type(e.lineno) is int else 0
    out = []
    if lineno:
        out.append('  File "<script>", line %d\n' % lineno)
        text = e.text if type(e.text) is str else src.line(lineno)
        text = text.rstrip('\r\n')
        body = text.lstrip()
        if body:
            out.append('    ' + body + '\n')
            off, end = e.offset, e.end_offset
            if type(off) is int and off >= 1:
                skip = len(text) - len(body)
                start = max(off - 1 - skip, 0)
                if type(end) is int and end > off and e.end_lineno == lineno:
                    width = end - off
                else:
                    width = 1
                out.append('    ' + ' ' * start + '^' * min(width, max(len(body) - start, 1)) + '\n')
    out.append(eline + '\n')
    return ''.join(out)[-TB_CAP:], lineno, eline


def _err(kind, message, line=0, tb=''):
    s = '{"type":' + _esc(kind) + ',"message":' + _esc(message[:MSG_CAP])
    if line and type(line) is int and line > 0:
        s += ',"line":' + _int_repr(line)
    if tb:
        s += ',"traceback":' + _esc(tb)
    return s + '}'


def _exc_err(kind, e, src):
    try:
        tb, line, last = _traceback(e, src)
    except MemoryError:
        raise
    except BaseException:
        tb, line, last = '', 0, _tname(type(e))
    return _err(kind, last, line, tb)


def _fail_payload(error_json):
    return '{"ok":false,"error":' + error_json + '}'


def _limit_payload(n, limit):
    return _fail_payload(_err('output_limit', 'the result is over the limit of %d bytes' % limit if n < 0 else
                              'the result is %d bytes, over the limit of %d bytes' % (n, limit)))


class _Capture:
    """sys.stdout during one batch record: keeps what print() writes, capped."""
    encoding = 'utf-8'
    errors = 'strict'
    newlines = None
    closed = False
    line_buffering = False

    def __init__(self, cap):
        self.parts = []
        self.n = 0
        self.cap = cap
        self.over = False

    def write(self, s):
        t = type(s)
        if t is not str:
            if not issubclass(t, str):
                raise TypeError('write() argument must be str, not ' + _tname(t))
            s = _str_str(s)
        n = len(s)
        if not self.over:
            room = self.cap - self.n
            if n > room:
                self.parts.append(s[:room])
                self.n = self.cap
                self.over = True
            else:
                self.parts.append(s)
                self.n += n
        return n

    def writelines(self, lines):
        for s in lines:
            self.write(s)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    def fileno(self):
        import _io
        raise _io.UnsupportedOperation('fileno')

    def text(self):
        return ''.join(self.parts)


def _reset_after_user_code():
    # A script can leave a trace/profile hook or a tiny recursion limit
    # behind; either would run user code inside, or break, the encoder (which
    # recurses two frames per nesting level). A raised limit is the script's
    # own choice and stays.
    try:
        _settrace(None)
        _setprofile(None)
        if _getrecursionlimit() < 1000:
            _setrecursionlimit(1000)
    except BaseException:
        pass


def _call(fn, args):
    """Calls user code; returns (value, None) or (None, exception)."""
    try:
        return fn(*args), None
    except BaseException as e:
        return None, e
    finally:
        _reset_after_user_code()


def _run_single(main, args, limit, src):
    value, exc = _call(main, args)
    if exc is not None:
        if isinstance(exc, MemoryError):
            return _fail_payload(_exc_err('memory_limit', exc, src))
        return _fail_payload(_exc_err('runtime_error', exc, src))
    envelope = len('{"ok":true,"result":}')
    try:
        text = _encode(value, limit - envelope)
    except _NotJSON as e:
        return _fail_payload(_err('result_not_json', e.args[0]))
    except _TooBig:
        return _limit_payload(-1, limit)
    except RecursionError:
        return _fail_payload(_err('result_not_json', 'result is nested too deeply'))
    except MemoryError:
        raise
    except Exception as e:
        # e.g. a finalizer changed a dict while it was being encoded.
        return _fail_payload(_err('runtime_error', 'encoding the result failed: ' + _exc_line(e)))
    return '{"ok":true,"result":' + text + '}'


def _run_batch(main, records, limit, src):
    real_stdout = getattr(sys, 'stdout', _stdout)
    items = []
    total = len('{"ok":true,"results":[]}')
    for record in records:
        cap = _Capture(limit)
        try:
            sys.stdout = cap
        except BaseException:
            pass
        value, exc = _call(main, (record,))
        try:
            sys.stdout = real_stdout
        except BaseException:
            pass
        out = cap.text()
        if exc is not None:
            if isinstance(exc, MemoryError):
                return _fail_payload(_exc_err('memory_limit', exc, src))
            item = '{"error":' + _exc_err('runtime_error', exc, src)
        elif cap.over:
            out = out[:256]  # a taste of it; the rest is what broke the cap
            item = '{"error":' + _err('output_limit', "the record's stdout is over the limit of %d characters" % limit)
        else:
            try:
                item = '{"result":' + _encode(value, limit)
            except _NotJSON as e:
                item = '{"error":' + _err('result_not_json', e.args[0])
            except _TooBig:
                item = '{"error":' + _err('output_limit', "the record's result is over the limit of %d bytes" % limit)
            except RecursionError:
                item = '{"error":' + _err('result_not_json', 'result is nested too deeply')
            except MemoryError:
                raise
            except Exception as e:
                item = '{"error":' + _err('runtime_error', 'encoding the result failed: ' + _exc_line(e))
        item += ',"stdout":' + _esc(out) + '}'
        total += len(item) + (1 if items else 0)  # the separating comma
        if total > limit:
            # The run's payload can no longer fit: stop calling main.
            return _limit_payload(-1, limit)
        items.append(item)
    return '{"ok":true,"results":[' + ','.join(items) + ']}'


def _read_exact_request():
    buf = bytearray()
    while True:
        nl = buf.find(b'\n')
        if nl >= 0:
            break
        if len(buf) > 256:
            _die(2, 'request header too long')
        chunk = _read(0, 65536)
        if not chunk:
            _die(2, 'EOF before the request header')
        buf += chunk
    header = _request_header(bytes(buf[:nl]))
    if header is None:
        _die(2, 'malformed request header %r' % bytes(buf[:nl][:100]))
    batch, slen, ilen, limit = header
    need = nl + 1 + slen + ilen
    while len(buf) < need:
        chunk = _read(0, min(need - len(buf), 1 << 20))
        if not chunk:
            _die(2, 'EOF in the request body')
        buf += chunk
    script = bytes(buf[nl + 1:nl + 1 + slen])
    data = bytes(buf[nl + 1 + slen:need])
    return batch, script, data, limit


def _request_header(line):
    # (batch, script length, input length, result limit), None if malformed.
    parts = line.split(b' ')
    if (len(parts) != 6 or parts[0] != b'SSE-REQ' or parts[1] != b'1' or parts[2] not in (b'single', b'batch')
            or not (parts[3].isdigit() and parts[4].isdigit() and parts[5].isdigit())):
        return None
    return parts[2] == b'batch', int(parts[3]), int(parts[4]), int(parts[5])


def _passed_fds(anc):
    # The descriptors of the SCM_RIGHTS messages in anc (recvmsg's list).
    fds = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            for i in range(0, len(data) - len(data) % 4, 4):
                fds.append(int.from_bytes(data[i:i + 4], sys.byteorder, signed=True))
    return fds


def _receive_output_fds(sock):
    try:
        msg, anc, flags, _ = sock.recvmsg(1, _socket.CMSG_SPACE(8))
    except OSError as e:
        _die(3, 'control socket: %s' % e)
    fds = _passed_fds(anc)
    if not msg:
        _exit(0)  # the server dropped an idle worker
    if msg != b'O' or len(fds) != 2 or flags & getattr(_socket, 'MSG_CTRUNC', 0):
        _die(2, 'expected the output descriptors, got %r with %d descriptors' % (msg, len(fds)))
    # Text written before now (preload chatter) belongs to nsjail's stdio.
    for f in (_stdout, _stderr):
        try:
            f.flush()
        except BaseException:
            pass
    _dup2(fds[0], 1)
    _dup2(fds[1], 2)
    for fd in fds:
        if fd > 2:
            _close(fd)


def _run(sock, script, mode_batch, data, limit):
    """Runs the request; returns the payload text (never raises for user faults)."""
    src = _Source(script)
    # Decode the input before any user code can interfere with the decoder.
    args = ()
    if data or mode_batch:
        try:
            value = _decode(data.decode('utf-8'))
        except MemoryError:
            raise
        except BaseException as e:
            return _fail_payload(_err('runtime_error', 'the input is not valid JSON: ' + _exc_line(e)))
        if mode_batch and type(value) is not list:
            return _fail_payload(_err('runtime_error', 'the batch input is not a JSON array'))
        args = (value,)
    try:
        code = compile(script, '<script>', 'exec', dont_inherit=True)
    except MemoryError:
        raise
    except BaseException as e:
        tb, line, last = _syntax(e, src)
        return _fail_payload(_err('syntax_error', last, line, tb))
    mod = _Module('__main__')
    ns = mod.__dict__
    ns['__builtins__'] = builtins
    _modules['__main__'] = mod
    _, exc = _call(exec, (code, ns))
    if exc is not None:
        kind = 'memory_limit' if isinstance(exc, MemoryError) else 'runtime_error'
        return _fail_payload(_exc_err(kind, exc, src))
    main = ns.get('main')
    if main is None:
        return _fail_payload(_err('missing_main', 'the script does not define main()'))
    if not callable(main):
        return _fail_payload(_err('missing_main', 'main is %s, not a function' % _article(_tname(type(main)))))
    if mode_batch:
        return _run_batch(main, args[0], limit, src)
    return _run_single(main, args, limit, src)


def _frame(body):
    return b'SSE-RES ' + _int_repr(len(body)).encode('ascii') + b'\n' + body


def _finish(sock, payload, limit):
    # payload is the run's text, or one of the precomputed payloads (bytes),
    # or None when the worker itself failed.
    try:
        if payload is None or payload is MEMORY_PAYLOAD:
            body = payload or WORKER_FAILED_PAYLOAD
        else:
            body = payload.encode('ascii')
    except MemoryError:
        body = MEMORY_PAYLOAD
    except BaseException:
        body = WORKER_FAILED_PAYLOAD
    if len(body) > limit:
        # Only error payloads get here (results were checked while encoding):
        # shed the traceback rather than break the cap.
        body = _limit_payload(len(body), limit).encode('ascii') if body.startswith(b'{"ok":true') else body
        if len(body) > limit and b'"traceback"' in body:
            body = body[:body.rfind(b',"traceback":')] + b'}}'
    frame = _frame(body)
    # The script's buffered output goes out before fds 1 and 2 close, so the
    # server sees EOF on both as soon as the result is on its way.
    for f in (getattr(sys, 'stdout', None), getattr(sys, 'stderr', None), _stdout, _stderr):
        try:
            f.flush()
        except BaseException:
            pass
    for fd in (1, 2):
        try:
            _close(fd)
        except BaseException:
            pass
    try:
        sock.sendall(frame)
    except BaseException:
        _exit(3)  # the script closed or replaced fd 3: no result to give
    # The answer is on its way. Tearing down this process (its memory, and as
    # pid 1 its namespaces) is background work: do it at the lowest priority
    # so that it does not slow the requests running next to it. A cell's
    # child waits for the server to end it (zygote.c, zyg_linger): its
    # cgroup's CPU weight, not its nice value, is what counts there.
    try:
        _setpriority(_PRIO_PROCESS, 0, 19)
    except BaseException:
        pass
    if _linger is not None:
        _linger()  # never returns
    _exit(0)


_linger = None  # a cell child's zyg_linger (_Zygote.child)


_PREWARM_SCRIPT = b'''
import math
class Record:
    def __init__(self, d): self.d = dict(d)
def main(rec=None, *args, **kw):
    out = {k.strip().lower(): v for k, v in (rec or {}).items() if v is not None}
    xs = [i * 2 for i in range(3) if i % 2 == 0]
    try:
        total = sum(xs) / len(xs)
    except (ZeroDivisionError, KeyError) as e:
        total = None
    f = lambda: None
    print(f"{len(out)} fields", "ok", sep=", ")
    return {"fields": out, "total": total, "ok": True, "tags": ("a", "b"), "n": 1.5}
'''

_TOUCH_SCRIPT = b'def main(data=None):\n    print("x")\n    return {"a": [1, 2.5, None, True, "s"]}\n'


def _dry_run(script, name, args):
    # Runs a constant built-in script the way _run runs a request (compile,
    # exec, main, encode), its output captured and dropped. Nothing of it
    # survives for the script of the request: its module is never in
    # sys.modules, its objects go with it, sys.stdout is restored.
    code = compile(script, '<script>', 'exec', dont_inherit=True)
    mod = _Module(name)
    ns = mod.__dict__
    ns['__builtins__'] = builtins
    exec(code, ns)
    real = sys.stdout
    sys.stdout = _Capture(1 << 10)
    try:
        _run_single(ns['main'], args, 1 << 10, _Source(script))
    finally:
        sys.stdout = real


def _prewarm():
    # The first compile() in a fresh interpreter costs ~0.9 ms (parser and
    # compiler state warming up); later ones of a small script ~20 us. Pay it
    # here, before the ready line, while the worker is a nice-19 background
    # spawn, instead of on the request path. The same goes for the encoder and
    # the decoder.
    try:
        _dry_run(_PREWARM_SCRIPT, '__prewarm__', ({' A ': 1, 'b': None},))
        _decode('{"a": [1, 2.5, null, true, "x\u00e9"]}')
    except BaseException:
        pass


def _touch():
    # Run by a cell's child before its ready line. A forked child shares the
    # zygote's pages until it writes them, and Python writes every object it
    # touches (reference counts): the pages a run writes are copied here,
    # while the child is a background spawn, instead of during the request
    # (about 90 of the ~140 copies a hello run made, for ~20 more in all).
    try:
        _dry_run(_TOUCH_SCRIPT, '__touch__', ())
        # And the steps around the script, on constants: receiving the output
        # descriptors, reading the request, framing the result (23 of the 45
        # copies left after the ready line, ~80 us of a hello run's CPU; a
        # burst of 32 on a full pool answered 13 % sooner).
        _socket.CMSG_SPACE(8)
        _passed_fds([(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b'\xff\xff\xff\xff')])
        buf = bytearray(b'SSE-REQ 1 single 1 0 9')
        buf += b'\nx'
        _request_header(bytes(buf[:buf.find(b'\n')]))
        _frame(bytes(buf[1:2]))
        for f in (_stdout, _stderr):
            f.flush()
    except BaseException:
        pass


def _configure(paths, preload):
    sys.path.extend([p for p in paths.split(':') if p])
    for name in [m for m in preload.split(',') if m]:
        try:
            __import__(name)
        except BaseException as e:
            _fail_start('%s: %s' % (name, _exc_line(e)))
    sys.argv[:] = ['<script>']
    _prewarm()


def _ready():
    try:
        sock = _socket.socket(fileno=3)
        sock.sendall(b'SSE-READY 1\n')
    except BaseException as e:
        _die(3, 'control socket: %s' % e)
    return sock


class _BecomeWorker(BaseException):
    # Raised in a zygote's child once it is a sandboxed worker: it unwinds the
    # zygote's frames, so that the script runs at the stack depth of a jail's
    # worker (the same recursion limit, the same tracebacks).
    def __init__(self, sock):
        self.sock = sock


def _start():
    arg = sys.argv[1] if len(sys.argv) > 1 else ''
    if arg.startswith('z1;'):
        try:
            _zygote_main(arg)  # returns only in a forked child, as _BecomeWorker
        except _BecomeWorker as e:
            return e.sock
        _exit(1)
    parts = arg.split(';', 2)
    if len(parts) != 3 or parts[0] != 'v1':
        _fail_start('configuration %r is not v1;<preload>;<paths>' % arg[:200])
    _configure(parts[2], parts[1])
    return _ready()


def _main():
    sock = _start()
    _receive_output_fds(sock)
    batch, script, data, limit = _read_exact_request()
    try:
        payload = _run(sock, script, batch, data, limit)
    except MemoryError:
        payload = MEMORY_PAYLOAD
    except BaseException:
        payload = None  # a failure of the worker itself: WORKER_FAILED_PAYLOAD
    _finish(sock, payload, limit)


# ---- Cell mode: the zygote (docs/PROTOCOL.md, "Cells") ----
#
# Run as: python3 -I -S -B -X utf8 worker.pyc 'z1;<preload>;<paths>;<limits>;<filter>'
# as pid 1 of a cell's nsjail, uid 0 of the cell's user namespace with the
# capabilities nsjail kept, fd 3 a SOCK_SEQPACKET control socket to the server.
# The zygote imports the preloads once, then forks one single-use worker per
# request of the server. It never runs user code: each child makes itself a
# sandbox and only then says it is ready; user code arrives after that. The
# fork loop and the sandbox steps are C (pyworker/zygote/zygote.c, loaded
# from _ZYGOTE_LOOP): a new child returns from it here, a sandbox already.

_PR_CAPBSET_DROP = 24
_ZYGOTE_LOOP = '/opt/pyworker/zygote.so'  # zygote/zygote.c, mounted beside the worker


def _zygote_main(arg):
    parts = arg.split(';')
    if len(parts) != 5:
        _fail_start('zygote configuration is not z1;<preload>;<paths>;<limits>;<filter>')
    try:
        import ctypes
        import gc
        import resource
        limits = [int(x) for x in parts[3].split(',')]
        filt = bytes.fromhex(parts[4])
        if len(limits) != 6 or not filt or len(filt) % 8:
            raise ValueError('want 6 limits and a filter of 8-byte instructions')
        libc = ctypes.CDLL(None, use_errno=True)
    except BaseException as e:
        _fail_start('zygote: ' + _exc_line(e))
    _configure(parts[2], parts[1])
    z = _Zygote(ctypes, libc, resource, limits, filt)
    gc.collect()
    gc.freeze()  # the children's first collections do not touch (copy) our pages
    try:
        z.loop()
    except _BecomeWorker:
        raise
    except BaseException as e:
        _die(6, 'zygote: ' + _exc_line(e))  # pid 1 exits: the cell and its children end


class _Zygote:
    def __init__(self, ctypes, libc, resource, limits, filt):
        self.ctypes = ctypes
        # limits: RLIMIT_AS, RLIMIT_CPU (s), RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_NPROC, /tmp size
        self.ctrl = _socket.socket(fileno=3)
        self.prctl = libc.prctl
        self.drop_bounding_set()
        self.pidns = posix.open('/proc/self/ns/pid', posix.O_RDONLY | posix.O_CLOEXEC)
        # A child's exit is seen on a pidfd of it, not through a SIGCHLD
        # handler: the zygote installs no signal handler at all, so a child
        # has none to undo (and no signal machinery to touch) before it runs
        # user code. PyDLL: the loop runs with the GIL held (there is no
        # other thread) and a child returns from it into the interpreter.
        self.lib = ctypes.PyDLL(_ZYGOTE_LOOP)
        self.lib.zyg_serve.restype = ctypes.c_int
        self.lib.zyg_serve.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)

        class ChildArgs(ctypes.Structure):
            _fields_ = [('id', ctypes.c_char * 24), ('uid', ctypes.c_int),
                        ('stdin_fd', ctypes.c_int), ('res_fd', ctypes.c_int)]

        self.args = ChildArgs()
        self.linger = self.lib.zyg_linger
        self.linger.restype = None
        self.linger.argtypes = ()
        # What each child's sandbox needs (zygote.c, sandbox), given once:
        # the /tmp mount options, the rlimits nsjail gives a jail (soft =
        # hard) and the child's seccomp filter.
        as_, cpu, fsize, nofile, nproc, tmp = limits
        R = resource
        rlimits = ((R.RLIMIT_AS, as_), (R.RLIMIT_CPU, cpu), (R.RLIMIT_FSIZE, fsize), (R.RLIMIT_NOFILE, nofile),
                   (R.RLIMIT_NPROC, nproc), (R.RLIMIT_STACK, 8 << 20), (R.RLIMIT_CORE, 0))
        res = (ctypes.c_int * len(rlimits))(*[r for r, _ in rlimits])
        val = (ctypes.c_ulonglong * len(rlimits))(*[v for _, v in rlimits])
        self.lib.zyg_init.restype = ctypes.c_int
        self.lib.zyg_init.argtypes = (ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                      ctypes.c_ushort, ctypes.c_char_p)
        if self.lib.zyg_init(b'size=%d,mode=1777' % tmp, len(rlimits), res, val, len(filt) // 8, filt) != 0:
            raise MemoryError('zygote loop tables')
        self.ctrl.send(b'SSE-ZREADY 1')

    def loop(self):
        # The fork loop is C (zygote.c): the Python one wrote (copied) 60-75
        # pages of the zygote after every fork; this one never touches the
        # interpreter's memory, which the children share. It returns only in
        # a new child, when the server closes the cell, or on a failure.
        ctypes, lib, args = self.ctypes, self.lib, self.args
        err = ctypes.create_string_buffer(256)
        r = lib.zyg_serve(3, self.pidns, ctypes.byref(args), err, len(err))
        if r == 1:
            self.child()  # never returns
        if r == 0:
            _exit(0)  # the server closed the cell: pid 1 exits, every child dies
        _die(-r if 0 < -r < 100 else 6, 'zygote: ' + err.value.decode('utf-8', 'backslashreplace'))

    def child(self):
        # In a forked child, pid 1 of its own pid namespace, already a
        # sandbox (zygote.c, sandbox): fd 3 is its result socket, where any
        # failure is reported.
        try:
            self.ctrl.detach()  # fd 3 is no longer the control socket; the object must not close it
            global _linger
            _linger = self.linger
            _touch()
            sock = _ready()
        except BaseException as e:
            try:
                _write(3, ('SSE-FAIL cell child set-up: %s\n' % _exc_line(e)).encode('utf-8', 'backslashreplace'))
            except BaseException:
                pass
            _exit(1)
        raise _BecomeWorker(sock)

    def drop_bounding_set(self):
        # The capability bounding set only limits what an execve can grant,
        # and the zygote never calls execve: it empties its own once, and
        # every child inherits the empty set (the server checks CapBnd of
        # each child before handing it a request).
        for cap in range(64):
            if self.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                if self.ctypes.get_errno() == 22:  # EINVAL: past the kernel's last capability
                    break
                self.check(-1, 'drop capability %d from the bounding set' % cap)

    def check(self, ret, what):
        if ret != 0:
            e = self.ctypes.get_errno()
            raise OSError(e, '%s: %s' % (what, posix.strerror(e)))

_main()
