# The program every execution container starts, as its PID 1:
#   /opt/venv/bin/python3 -u -c <this file> <deadline seconds>
#
# Two processes, so that the status and the end of the output are reported by something the
# program cannot reach:
# - The supervisor (this process, PID 1) makes itself non-dumpable -- a process of the same
#   uid can then neither ptrace it nor read its /proc/<pid>/mem, fds or environment; as PID 1
#   it gets no signal it has no handler for -- and forks the child *before* it reads the
#   payload, so the call's token never exists in the child's memory. It reads the header (the
#   code's length and the token) and the code from stdin, hands the code to the child over a
#   pipe, relays the child's stdout and stderr pipes to its own, reaps every process that ends
#   (it is the container's init), and when the child is gone ends both streams with a trailer,
#   NUL "pyexec-exit <token> <status>" LF, carrying the status the kernel reported (128 +
#   signal for a killed child); then it exits, which ends the container and everything in it.
#   The server can answer without waiting for the container to stop. Whatever the program
#   writes is relayed as output; it cannot end the streams early, since it does not know the
#   token. At the deadline the supervisor exits with 137, so an orphaned container (its server
#   killed) ends by itself.
# - The child runs the code as __main__ in the interpreter it was forked from (one interpreter
#   start per call); whatever follows the code on stdin is its own stdin. When the program is
#   over (threads joined, atexit handlers run, output flushed) it exits with the program's
#   status.
import os
import sys

_PR_SET_DUMPABLE = 4


def _set_dumpable(flag):
    # prctl through _ctypes directly: the ctypes package costs ~2 ms more at start, and the
    # supervisor's start is on a cold call's path.
    import _ctypes

    class Int(_ctypes._SimpleCData):
        _type_ = "i"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class Libc:
        _handle = _ctypes.dlopen(None)

    Function(("prctl", Libc()))(_PR_SET_DUMPABLE, flag, 0, 0, 0)


def _read_exact(fd, count):
    chunks = []
    while count > 0:
        chunk = os.read(fd, min(count, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _write_all(fd, data):
    # Pieces of at most PIPE_BUF are never partial: under gVisor (Debian 12's runsc) a single
    # pipe write loses whatever it carries past 64 KiB.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:4096]) :]


class _WholeWrites:
    """A raw writer for fd 1 or 2 that writes everything, in pieces of at most PIPE_BUF."""

    def __init__(self, fd):
        self._fd = fd

    def write(self, data):
        view = memoryview(data).cast("B")
        total = len(view)
        _write_all(self._fd, view)
        return total

    def flush(self):
        pass

    def fileno(self):
        return self._fd

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def seekable(self):
        return False

    @property
    def closed(self):
        return False


def _whole_write_streams():
    import io

    for name, fd, errors in (("stdout", 1, "strict"), ("stderr", 2, "backslashreplace")):
        stream = io.TextIOWrapper(
            _WholeWrites(fd), encoding="utf-8", errors=errors, write_through=True
        )
        setattr(sys, name, stream)
        setattr(sys, "__" + name + "__", stream)


def _exit_status(error):
    """The status `sys.exit(code)` gives, printing a non-integer code as Python does."""
    code = error.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write(str(code) + "\n")
    except Exception:
        pass
    return 1


def _print_exception(error, tb):
    # Imported only here: traceback (with linecache, tokenize, re) costs ~10 ms at start.
    import traceback

    traceback.print_exception(type(error), error, tb)


def _child(code_pipe, exit):
    """Runs the program; never returns."""
    import types

    _set_dumpable(1)  # the program's own process: its tools (/proc/self, debuggers) work
    _whole_write_streams()
    # Take the copy-on-write faults of the fork now, while no call waits: a collection
    # touches every tracked object, a first compile the compiler's state. Without this the
    # program's first milliseconds pay for them.
    import gc

    gc.collect()
    exec(compile("pass", "<warm-up>", "exec"), {})
    source = b""
    while True:
        chunk = os.read(code_pipe, 1 << 20)
        if not chunk:
            break
        source += chunk
    os.close(code_pipe)
    path = "/tmp/main.py"
    with open(path, "wb") as file:
        file.write(source)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    status = 0
    try:
        code = compile(source, path, "exec")
    except (SyntaxError, ValueError) as error:
        _print_exception(error, None)
        code, status = None, 1
    del source
    if code is not None:
        try:
            exec(code, main.__dict__)
        except SystemExit as error:
            status = _exit_status(error)
        except BaseException as error:
            # Drop this runner's own frame so the traceback starts at the user's code.
            tb = error.__traceback__.tb_next if error.__traceback__ else None
            _print_exception(error, tb)
            status = 1
    # End as the interpreter would: non-daemon threads, atexit handlers, flushed streams.
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
    except BaseException:
        pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    exit(status)


def _read_header():
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            return None
        header += byte
    length, token = header.split()
    return int(length), token


def _reap(child):
    """Reaps every process that has ended (the container's init must); returns the child's
    wait status if it was among them."""
    found = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == child:
            found = status


def _relay(pid, pipes):
    """Copies the child's output pipes to ours until the child is gone; returns its status."""
    import select

    poller = select.poll()
    for source in pipes:
        poller.register(source, select.POLLIN)
    open_pipes = dict(pipes)
    status = None
    # What a background process may still add once the child is gone.
    late_budget = 1 << 20
    while open_pipes:
        # A background process may keep the pipes open after the child ended: look at the
        # child every 50 ms, and once it is gone take only what is already there.
        for source, events in poller.poll(50 if status is None else 0):
            data = os.read(source, 65536) if events & (select.POLLIN | select.POLLHUP) else b""
            if data:
                _write_all(open_pipes[source], data)
                if status is not None:
                    late_budget -= len(data)
            else:
                poller.unregister(source)
                del open_pipes[source]
        if status is None:
            status = _reap(pid)
        elif late_budget <= 0 or not poller.poll(0):
            break
    while status is None:
        reaped, word = os.waitpid(-1, 0)
        if reaped == pid:
            status = word
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) & 0xFF


def _keep_deadline(seconds, exit):
    """Ends the container at its deadline, even with no server left to do it."""
    import _signal as signal  # the C module: `signal` imports enum, ~8 ms at start
    import time

    deadline = time.monotonic() + seconds

    def expired(signum, frame):
        # As PID 1 only signals with a handler arrive; a SIGALRM the program sends early is
        # ignored here.
        if time.monotonic() >= deadline - 0.5:
            exit(137)

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


def _supervise():
    import _signal as signal  # the C module: `signal` imports enum, ~8 ms at start

    _set_dumpable(0)
    exit = os._exit
    # PID 1 gets only the signals it handles: SIGINT must not raise in here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if len(sys.argv) > 1:
        _keep_deadline(int(sys.argv[1]), exit)
    code_read, code_write = os.pipe()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            for fd in (code_write, out_read, out_write, err_read, err_write):
                os.close(fd)
            _child(code_read, exit)
        finally:
            exit(70)
    for fd in (code_read, out_write, err_write):
        os.close(fd)
    header = _read_header()
    if header is None:
        _write_all(2, b"pyexec runner: no payload received\n")
        exit(125)
    length, token = header
    try:
        _write_all(code_write, _read_exact(0, length))
    except OSError:
        pass  # the child is gone already; its status says why
    os.close(code_write)
    status = _relay(pid, {out_read: 1, err_read: 2})
    trailer = b"\0pyexec-exit " + token + b" " + str(status).encode() + b"\n"
    for fd in (1, 2):
        try:
            _write_all(fd, trailer)
        except OSError:
            pass
    exit(status)


_supervise()
