# The program every execution container starts, as its PID 1, as root with only the
# capabilities SETUID, SETGID, SETPCAP and KILL:
#   /opt/venv/bin/python3 -s -S -P -u -c <this file> <deadline seconds> <program uid>
#       <supervisor uid>
#
# The flags keep the environment's code out of the supervisor: no `site` (so no `.pth` file of
# an installed package runs here, and site-packages is not on sys.path) and nothing the
# program can write on sys.path (`-c` alone would put the working directory, /tmp, first, and
# a /tmp/json.py would run here when the supervisor imports json). The child, the program's
# process, runs `site` after the fork and puts the program's folder first, as `python3
# main.py` would (`_as_a_program`).
#
# Two processes, so that the status and the end of the output are reported by something the
# program cannot reach:
# - The supervisor (this process, PID 1) forks the child *before* it reads the payload, so the
#   call's token never exists in the child's memory, and the two part ways at once (`_fork`):
#   the child becomes the program's uid with no capability at all (bounding set included),
#   and its fd 0 is a pipe of the supervisor's, never the container's stdin; the supervisor
#   becomes a uid of its own (the program's plus one), keeping only KILL (to interrupt and
#   kill the child), makes itself non-dumpable and blanks the environment block exec gave
#   it. Another uid, non-dumpable: the program can neither ptrace it nor open its
#   /proc/1/fd/* (under gVisor too, which ignores dumpability there), nor signal it; as PID 1
#   it also gets no signal it has no handler for. It reads the header (the code's length and
#   the token) and the code from stdin, hands the code to the child over a pipe, then copies
#   the rest of stdin to the child's (`_pump`), relays the child's stdout and stderr pipes to
#   its own, reaps every process that ends
#   (it is the container's init), and when the child is gone ends both streams with a trailer,
#   NUL "pyexec-exit <token> <status>" LF, carrying the status the kernel reported (128 +
#   signal for a killed child); then it exits, which ends the container and everything in it.
#   When the call allows files back (a budget in the header), the stdout trailer also carries
#   the length of a bundle that follows it: a JSON manifest line, then the bytes of each file
#   -- the figures the program drew, then what it left in /tmp/outputs -- within the budget.
#   Only regular files are read (no link is followed, nothing blocks); the rest is listed. The
#   child makes what it leaves there readable to the supervisor's uid when it ends
#   (`_share_outputs`).
#   A child killed by SIGKILL gets " oom" after the length when the container's memory cgroup
#   counts an OOM kill (engines differ in reporting it: Podman never does).
#   The server can answer without waiting for the container to stop. Whatever the program
#   writes is relayed as output; it cannot end the streams early, since it does not know the
#   token. At the deadline the supervisor exits with 137, so an orphaned container (its server
#   killed) ends by itself.
# - The child runs the code as __main__ in the interpreter it was forked from (one interpreter
#   start per call); whatever follows the code on stdin is its own stdin, copied by the
#   supervisor. When the program is
#   over (threads joined, atexit handlers run, output flushed) it exits with the program's
#   status.
#
# Session mode (`<deadline> <uids> session <idle seconds>`, see sandbox/session_call.rs): the child lives
# on and runs call after call in one `__main__` namespace. Each call's header also carries its
# stdin's length and its timeout: "<code length> <token> <files budget> <stdin length>
# <timeout ms>". The supervisor hands code and stdin to the child over a pipe, relays its
# output, and learns the end of a call from the child's status line on another pipe (so in a
# session the status is the interpreter's word: the program can only misreport its own
# call; each status line names its call, so a late or forged one cannot shift the calls after
# it). At the timeout it sends SIGINT (a KeyboardInterrupt in the call); if the call has not
# ended after a grace, it kills the child. A byte on stdin during a call asks for the same
# interrupt (the server's cancel). The stdout trailer gains flags: "timeout" (interrupted at
# the limit), "ended" (the interpreter is gone -- exit(), a crash, a kill -- and so is the
# session; the supervisor exits after the trailers). Files in /tmp/outputs come back with the
# call that wrote or changed them; figures come back with the call that drew them (the child
# clears them when the next call starts). Output the child writes
# between calls is held (64 KiB per stream) and given to the next call. With no call for
# <idle seconds>, or when stdin closes (the server is gone), the supervisor exits with 125.
import os
import sys

_PR_SET_DUMPABLE = 4
_PR_SET_KEEPCAPS = 8
_PR_CAPBSET_DROP = 24
_CAP_KILL = 5
_CAPABILITY_VERSION_3 = 0x20080522


class _Libc:
    """The few libc calls the runner needs, through _ctypes directly: the ctypes package costs
    ~4 ms at start, and the supervisor's start is on a cold call's path."""

    def __init__(self):
        import _ctypes

        class Int(_ctypes._SimpleCData):
            _type_ = "i"

        class Pointer(_ctypes._SimpleCData):
            _type_ = "P"

        class Size(_ctypes._SimpleCData):
            _type_ = "L"

        class Handle:
            _handle = _ctypes.dlopen(None)

        def function(name, restype):
            class Function(_ctypes.CFuncPtr):
                _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
                _restype_ = restype

            return Function((name, Handle()))

        self.errno = _ctypes.get_errno
        self.Pointer, self.Size = Pointer, Size
        self.prctl = function("prctl", Int)
        self.capset = function("capset", Int)
        self.clearenv = function("clearenv", Int)
        self.strlen = function("strlen", Size)
        self.memset = function("memset", Pointer)
        self.environ = Pointer.in_dll(Handle(), "environ")


_LIBC = []


def _libc():
    if not _LIBC:
        _LIBC.append(_Libc())
    return _LIBC[0]


def _set_dumpable(flag):
    _libc().prctl(_PR_SET_DUMPABLE, flag, 0, 0, 0)


def _become(uid, keep):
    """Makes this process `uid`, user and group, with no supplementary group, and of all
    capabilities only those in the bit mask `keep`: effective, permitted and bounding alike,
    so nothing it runs can regain one. Run as root (the container's user) with SETUID, SETGID
    and SETPCAP; raises if any step fails, so nothing runs with other ids than asked."""
    libc = _libc()
    for cap in range(64):
        if not keep & (1 << cap):
            libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the last one: fine
    if keep:
        libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if keep:
        low, high = keep & 0xFFFFFFFF, keep >> 32
        header = _CAPABILITY_VERSION_3.to_bytes(4, "little") + bytes(4)
        data = b"".join(
            word.to_bytes(4, "little") for word in (low, low, 0, high, high, 0)
        )
        if libc.capset(header, data) != 0:
            raise OSError(libc.errno(), "capset: " + os.strerror(libc.errno()))
        libc.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid) or os.getgroups():
        raise OSError("the ids did not change as asked")


def _environment_block():
    """Where exec put the environment's strings (one block on the stack), or None: found
    before anything changes the environment, blanked by the supervisor once the program's
    process has its copy (gVisor lets any uid read /proc/1/environ)."""
    libc = _libc()
    table = libc.environ.value
    if not table:
        return None
    low = high = None
    index = 0
    while True:
        entry = libc.Pointer.from_address(table + index * 8).value
        if not entry:
            break
        end = entry + libc.strlen(libc.Pointer(entry)) + 1
        low = entry if low is None else min(low, entry)
        high = end if high is None else max(high, end)
        index += 1
    if low is None or high - low > (1 << 20):
        return None  # not the one block exec makes: leave it
    return low, high


def _blank_environment(block):
    libc = _libc()
    libc.clearenv()
    if block is not None:
        libc.memset(libc.Pointer(block[0]), 0, libc.Size(block[1] - block[0]))


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


_FIGURES = "/tmp/.pyexec-figures"
_OUTPUTS = "/tmp/outputs"
# Figures saved per call at most; the server returns fewer (--max-images).
_MAX_FIGURES = 64
_saved_figures = [0]

# The matplotlib backend `MPLBACKEND=module://pyexec_figures` names: Agg, with a show() that
# keeps each figure for the answer. Its module exists only once matplotlib asks for it.
_BACKEND = """
from matplotlib.backends.backend_agg import FigureCanvasAgg as FigureCanvas
from matplotlib.backend_bases import FigureManagerBase as FigureManager


def show(*args, **kwargs):
    _save_figures(close=True)
"""


def _save_figures(close):
    """Saves every open figure as a PNG for the answer, in the order they were made."""
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return
    managers = sorted(helpers.Gcf.get_all_fig_managers(), key=lambda m: m.num)
    for manager in managers:
        if _saved_figures[0] >= _MAX_FIGURES:
            break
        _saved_figures[0] += 1
        try:
            os.makedirs(_FIGURES, 0o755, exist_ok=True)
            path = "%s/figure-%03d.png" % (_FIGURES, _saved_figures[0])
            manager.canvas.figure.savefig(path, format="png")
        except Exception as error:
            sys.stderr.write("pyexec: a figure could not be saved: %r\n" % (error,))
    if close and managers:
        sys.modules["matplotlib.pyplot"].close("all")


class _BackendFinder:
    """Imports `pyexec_figures` from `_BACKEND`; every other name is someone else's."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "pyexec_figures":
            return None
        import importlib.util

        return importlib.util.spec_from_loader(name, _BackendFinder)

    @staticmethod
    def create_module(spec):
        return None

    @staticmethod
    def exec_module(module):
        module.__dict__["_save_figures"] = _save_figures
        exec(compile(_BACKEND, "<pyexec_figures>", "exec"), module.__dict__)


# With secrets, the proxy's authority next to the system's roots (SSL_CERT_FILE names it).
_EGRESS_CA = "/run/pyexec-egress/ca.pem"


class _CertifiFinder:
    """With secrets: `certifi`, imported from the environment as usual, then answering the
    bundle SSL_CERT_FILE names from where() and contents(), so the clients that read only
    certifi's list (httpx, and the SDKs built on it) trust the proxy's authority too."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "certifi":
            return None
        import importlib.util

        sys.meta_path.remove(_CertifiFinder)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            module.where = lambda: _EGRESS_CA
            module.contents = lambda: open(_EGRESS_CA, encoding="ascii").read()

        spec.loader.exec_module = exec_module
        return spec


def _import_hooks():
    """The program's own imports that the server adjusts: matplotlib's figure backend, and
    certifi's bundle when the proxy injects secrets."""
    if os.environ.get("MPLBACKEND") == "module://pyexec_figures":
        sys.meta_path.append(_BackendFinder)
    if os.environ.get("SSL_CERT_FILE") == _EGRESS_CA:
        sys.meta_path.insert(0, _CertifiFinder)


def _as_a_program(folder):
    """Gives the program's process what `python3 <folder>/main.py` would have: `site` (the
    environment's site-packages, its `.pth` files, exit() and help()), run here and never in
    the supervisor, and `folder` first on sys.path."""
    import site

    site.main()
    sys.path.insert(0, folder)


def _child(code_pipe, exit):
    """Runs the program; never returns."""
    import types

    _set_dumpable(1)  # the program's own process: its tools (/proc/self, debuggers) work
    _whole_write_streams()
    _as_a_program("/tmp")
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
    _import_hooks()
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [path]
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
    _finish(status, exit)


def _share_outputs():
    """Makes what the program leaves for the answer readable by the supervisor, whose uid is
    not the program's: regular files get read permission for others, folders read and search
    (a file made with mode 0600, as tempfile does, would otherwise stay behind). Only what
    the program owns can change; links are not followed; at most 2,000 entries."""
    import stat

    budget = [2000]

    def share(path, wanted):
        try:
            info = os.lstat(path)
        except OSError:
            return False
        if stat.S_ISDIR(info.st_mode) and wanted == 0o005 or (
            stat.S_ISREG(info.st_mode) and wanted == 0o004
        ):
            try:
                os.chmod(path, stat.S_IMODE(info.st_mode) | wanted)
            except OSError:
                pass
            return True
        return False

    for top in (_FIGURES, _OUTPUTS):
        if not share(top, 0o005):
            continue
        for folder, folders, files in os.walk(top):
            for name in folders:
                share(os.path.join(folder, name), 0o005)
            for name in files:
                share(os.path.join(folder, name), 0o004)
            budget[0] -= len(folders) + len(files)
            if budget[0] <= 0:
                return


def _clear_figures():
    """Removes the figures an earlier session call drew (the supervisor has returned them)."""
    try:
        names = os.listdir(_FIGURES)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(_FIGURES, name))
        except OSError:
            pass


def _flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


def _finish(status, exit):
    """Ends the program as the interpreter would: non-daemon threads, atexit handlers, flushed
    streams; never returns."""
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
    except BaseException:
        pass
    # Figures still open when the program ends come back too (before atexit: pyplot's own
    # handler closes them all).
    try:
        _save_figures(close=False)
    except BaseException:
        pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    _flush()
    try:
        _share_outputs()
    except BaseException:
        pass
    exit(status)


def _read_line(fd):
    """One header line from `fd` (at most _HEADER_MAX bytes); None at EOF or for a line too long to
    be a header."""
    line = b""
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte or len(line) > _HEADER_MAX:
            return None
        line += byte
    return line


def _give_stdin(data, encoding, errors):
    """Makes `data` this call's stdin (fd 0 and sys.stdin), then EOF."""
    import io

    read, write = os.pipe()
    os.dup2(read, 0)
    os.close(read)

    def feed():
        try:
            _write_all(write, data)
        except OSError:
            pass  # the call ended without reading it all
        finally:
            os.close(write)

    if len(data) <= 4096:
        feed()  # fits in the pipe: no thread
    else:
        import _thread

        _thread.start_new_thread(feed, ())
    raw = io.FileIO(0, "r", closefd=False)
    stream = io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding, errors=errors)
    sys.stdin = sys.__stdin__ = stream


def _session_child(call_pipe, done_pipe, exit):
    """Runs call after call in one namespace, each ended by its status on `done_pipe`; never
    returns (exit() in a call ends it, and with it the session)."""
    import _signal as signal
    import linecache
    import types

    _set_dumpable(1)
    # fd 0 is /dev/null between calls (`_session`); each call gets a pipe of its own.
    encoding, errors = sys.stdin.encoding, sys.stdin.errors
    _whole_write_streams()
    _as_a_program("/tmp")
    _import_hooks()
    main = types.ModuleType("__main__")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [""]
    in_call = [False]

    def interrupt(signum, frame):
        # Only a call is interrupted: between calls the loop below must never be.
        if in_call[0]:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    number = 0
    while True:
        header = _read_line(call_pipe)
        if header is None:
            _finish(0, exit)
        call, code_length, input_length = (int(field) for field in header.split())
        source = _read_exact(call_pipe, code_length)
        _give_stdin(_read_exact(call_pipe, input_length), encoding, errors)
        number += 1
        _saved_figures[0] = 0
        _clear_figures()
        # Tracebacks show the lines of every call's code, earlier calls' functions included.
        name = "<call %d>" % number
        text = source.decode("utf-8", "replace")
        linecache.cache[name] = (len(text), None, text.splitlines(True), name)
        status = 0
        try:
            code = compile(source, name, "exec")
        except (SyntaxError, ValueError) as error:
            _print_exception(error, None)
            code, status = None, 1
        del source, text
        if code is not None:
            try:
                in_call[0] = True
                exec(code, main.__dict__)
                in_call[0] = False
            except SystemExit as error:
                in_call[0] = False
                _finish(_exit_status(error), exit)
            except BaseException as error:
                in_call[0] = False
                tb = error.__traceback__.tb_next if error.__traceback__ else None
                # An interrupt's traceback ends in the user's code, not in `interrupt`.
                last = tb
                while last is not None and last.tb_next is not None:
                    if last.tb_next.tb_frame.f_code is interrupt.__code__:
                        last.tb_next = None
                        break
                    last = last.tb_next
                _print_exception(error, tb)
                status = 1
            del code
        # What a call drew comes back with it, and is closed (as a notebook cell's).
        try:
            _save_figures(close=True)
        except BaseException:
            pass
        _flush()
        try:
            _share_outputs()
        except BaseException:
            pass
        # The leading newline ends whatever the program may have left on this pipe.
        _write_all(done_pipe, b"\n%d %d\n" % (call, status))


def _read_header():
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            return None
        header += byte
    fields = header.split()
    budget = int(fields[2]) if len(fields) > 2 else 0
    return int(fields[0]), fields[1], budget


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
    return _wait_status(status)


_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _collect(budget, seen=None):
    """The bundle of files to return: a JSON manifest line, then each file's bytes. Figures
    first, then /tmp/outputs (sorted, subfolders too), while they fit in `budget` bytes.
    With `seen` (a session), a file in /tmp/outputs comes back only when it is new or changed
    since it was last seen (figures: the child clears them when the next call starts)."""
    import stat  # already imported by os

    items = []
    blobs = []
    left = [budget]
    present = set()

    def text(name):
        # Names that are not UTF-8 are shown with replacement characters.
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    def take(kind, name, entry, folder):
        try:
            fd = os.open(entry, _READ_FLAGS, dir_fd=folder)
        except OSError as error:
            why = "a symbolic link (not followed)" if error.errno == 40 else error.strerror
            items.append({"kind": kind, "name": name, "skipped": why})
            return
        try:
            info = os.fstat(fd)
            named = os.lstat(entry, dir_fd=folder)
            if (info.st_dev, info.st_ino) != (named.st_dev, named.st_ino):
                # Followed a link after all (gVisor) or swapped meanwhile.
                items.append({"kind": kind, "name": name, "skipped": "a symbolic link (not followed)"})
                return
            if not stat.S_ISREG(info.st_mode):
                items.append({"kind": kind, "name": name, "skipped": "not a regular file"})
                return
            if seen is not None and kind == "file":
                key = (info.st_ino, info.st_size, info.st_mtime_ns)
                present.add(name)
                if seen.get(name) == key:
                    return  # handed back by an earlier call, unchanged since
                seen[name] = key
            if info.st_size > left[0]:
                items.append({"kind": kind, "name": name, "skipped": "over the limit", "size": info.st_size})
                return
            data = _read_exact(fd, left[0] + 1)
            if len(data) > left[0]:
                items.append({"kind": kind, "name": name, "skipped": "over the limit", "size": len(data)})
                return
            left[0] -= len(data)
            items.append({"kind": kind, "name": name, "size": len(data)})
            blobs.append(data)
        finally:
            os.close(fd)

    def open_folder(path, parent=None):
        # O_NOFOLLOW: a folder the program swapped for a link is not entered. gVisor follows
        # a link to a folder despite it, so what was opened must also be what lstat sees.
        try:
            fd = os.open(path, _FOLDER_FLAGS, dir_fd=parent)
        except OSError:
            return None
        try:
            opened = os.fstat(fd)
            named = os.lstat(path, dir_fd=parent)
            if stat.S_ISDIR(named.st_mode) and (opened.st_dev, opened.st_ino) == (
                named.st_dev,
                named.st_ino,
            ):
                return fd
        except OSError:
            pass
        os.close(fd)
        return None

    def walk(folder, prefix, depth, kind):
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if len(items) >= 1000:
                return
            name = prefix + text(entry.name)
            if entry.is_symlink():
                items.append({"kind": kind, "name": name, "skipped": "a symbolic link (not followed)"})
            elif entry.is_dir(follow_symlinks=False):
                inner = open_folder(entry.name, folder) if depth < 8 else None
                if inner is not None:
                    try:
                        walk(inner, name + "/", depth + 1, kind)
                    finally:
                        os.close(inner)
                elif depth < 8:
                    items.append({"kind": kind, "name": name + "/", "skipped": "a folder that cannot be read"})
            else:
                take(kind, name, entry.name, folder)

    for path, kind in ((_FIGURES, "figure"), (_OUTPUTS, "file")):
        folder = None if os.path.islink(path) else open_folder(path)
        if folder is None:
            if os.path.islink(path):
                items.append({"kind": kind, "name": path, "skipped": "a symbolic link (not followed)"})
            continue
        try:
            walk(folder, "", 0 if kind == "file" else 8, kind)
        finally:
            os.close(folder)
    if seen is not None:
        # Forget what is gone, so the record stays as small as /tmp/outputs.
        for name in [name for name in seen if name not in present]:
            del seen[name]
    if not items:
        return b""
    import json  # only when something comes back: it costs milliseconds

    manifest = json.dumps(items, ensure_ascii=True).encode()
    return b"".join([manifest, b"\n"] + blobs)


def _keep_deadline(seconds, exit):
    """Ends the container at its deadline, even with no server left to do it."""
    import _signal as signal  # the C module: `signal` imports enum, ~8 ms at start
    import time

    deadline = time.monotonic() + seconds

    def expired(signum, frame):
        # As PID 1 only signals with a handler arrive; a SIGALRM the program sends early is
        # ignored here.
        if time.monotonic() >= deadline - 0.5:
            exit(_KILLED)

    signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)


def _oom_killed():
    """Whether the kernel's OOM killer struck in this container's memory cgroup (v1 or v2)."""
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path, "rb") as counters:
                for line in counters:
                    key, _, value = line.partition(b" ")
                    if key == b"oom_kill":
                        return int(value) > 0
        except (OSError, ValueError):
            pass
    return False


# The program's uid and the supervisor's (argv), and the environment block exec left.
_IDS = {}


def _fork(child, stdin, child_fds, parent_fds):
    """Forks the process that runs the program, with `stdin` as its fd 0 (never the
    container's stdin, which carries the token) and its stdout and stderr on fresh pipes, and
    gives each process its own uid: the child the program's, with no capability at all; this
    process the supervisor's, keeping only KILL. Both happen before the child runs anything
    of the environment's packages or the supervisor reads anything of the call. The child
    closes `parent_fds` and runs `child()` (which never returns); the parent closes
    `child_fds` and gets (pid, stdout's read end, stderr's read end) to relay."""
    import _signal as signal

    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            os.dup2(stdin, 0)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            for fd in parent_fds + (stdin, out_read, out_write, err_read, err_write):
                os.close(fd)
            try:
                _become(_IDS["program"], 0)
            except Exception as error:
                _write_all(2, b"pyexec runner: the program cannot get a uid of its own: %r\n" % (error,))
                os._exit(70)
            try:
                os.mkdir(_OUTPUTS, 0o755)  # where a program leaves the files it gives back
            except OSError:
                pass
            child()
        finally:
            os._exit(70)
    for fd in child_fds + (stdin, out_write, err_write):
        os.close(fd)
    try:
        _become(_IDS["supervisor"], 1 << _CAP_KILL)
    except Exception as error:
        os.kill(pid, signal.SIGKILL)
        _write_all(2, b"pyexec runner: the supervisor cannot drop to a uid of its own: %r\n" % (error,))
        os._exit(70)
    _set_dumpable(0)  # a change of uid resets it; said again to be plain
    _blank_environment(_IDS["environment"])
    _egress_relay()
    return pid, out_read, err_read


# The egress relay, when the server gave this container a way out (an allowlist: it mounted
# its proxy's Unix socket at _EGRESS_SOCKET). The container has no network; the supervisor
# listens on the loopback port HTTP_PROXY names and carries every connection to that socket
# and back, and the proxy at the other end decides what may be reached. Bound before the
# program's code arrives, so the program cannot take the port first; one thread, nothing
# blocking, at most _EGRESS_PAIRS connections at once (later ones are closed unanswered) and
# _EGRESS_CHUNK bytes held per direction, so the supervisor's memory stays small whatever
# the program does. The program may also connect to the socket itself: the proxy is the
# boundary, this is only the convenience ordinary clients need.
_EGRESS_SOCKET = "/run/pyexec-egress/proxy.sock"
_EGRESS_PORT = 3128
_EGRESS_PAIRS = 128
_EGRESS_CHUNK = 262144


def _egress_relay():
    try:
        os.stat(_EGRESS_SOCKET)
    except OSError:
        return
    import _socket
    import _thread

    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", _EGRESS_PORT))
        listener.listen(128)
        listener.setblocking(False)
    except OSError as error:
        _write_all(2, b"pyexec runner: the egress proxy's port cannot be opened: %r\n" % (error,))
        return
    _thread.start_new_thread(_egress_loop, (listener, _socket))


def _egress_loop(listener, _socket):
    import select

    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    socks = {}  # fd -> socket
    peer = {}  # fd -> the fd its bytes go to
    pending = {}  # fd -> bytes waiting to be written to fd
    ended = set()  # fds whose reading side has ended
    polled = {}  # fd -> the events it is polled for; an fd with none is not polled at all

    def close(fd):
        for one in (fd, peer.get(fd)):
            if one in socks:
                if polled.pop(one, None) is not None:
                    poller.unregister(one)
                socks.pop(one).close()
                peer.pop(one, None)
                pending.pop(one, None)
                ended.discard(one)

    def watch(fd):
        # Read fd while its peer's queue is empty; write fd while its own queue is not. An fd
        # wanting neither is left out of the poll (a hang-up would be reported over and over).
        wanted = 0
        if fd not in ended and not pending.get(peer[fd]):
            wanted |= select.POLLIN
        if pending.get(fd):
            wanted |= select.POLLOUT
        had = polled.pop(fd, None)
        if wanted:
            polled[fd] = wanted
            if had is None:
                poller.register(fd, wanted)
            elif had != wanted:
                poller.modify(fd, wanted)
        elif had is not None:
            poller.unregister(fd)

    def settle(fd):
        # Pass an end on once what came before it is written; close the pair when both
        # sides ended and nothing is left to write either way.
        other = peer[fd]
        for one, to in ((fd, other), (other, fd)):
            if one in ended and not pending.get(to):
                try:
                    socks[to].shutdown(_socket.SHUT_WR)
                except OSError:
                    pass
        if fd in ended and other in ended and not pending.get(fd) and not pending.get(other):
            close(fd)
            return
        watch(fd)
        watch(other)

    def accept():
        try:
            fd, _ = listener._accept()
        except OSError:
            return
        client = _socket.socket(fileno=fd)
        if len(socks) >= 2 * _EGRESS_PAIRS:
            client.close()
            return
        upstream = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            upstream.connect(_EGRESS_SOCKET)
        except OSError:
            client.close()
            upstream.close()
            return
        for one in (client, upstream):
            one.setblocking(False)
            socks[one.fileno()] = one
        peer[client.fileno()], peer[upstream.fileno()] = upstream.fileno(), client.fileno()
        watch(client.fileno())
        watch(upstream.fileno())

    def serve(fd, events):
        if events & select.POLLOUT and pending.get(fd):
            try:
                sent = socks[fd].send(pending[fd])
            except BlockingIOError:
                sent = 0
            pending[fd] = pending[fd][sent:]
        elif events & (select.POLLIN | select.POLLHUP | select.POLLERR) and fd not in ended:
            try:
                data = socks[fd].recv(_EGRESS_CHUNK)
            except BlockingIOError:
                return
            if data:
                pending[peer[fd]] = memoryview(data)  # a partial send slices without a copy
            else:
                ended.add(fd)
        elif events & (select.POLLHUP | select.POLLERR):
            raise OSError("hung up")
        settle(fd)

    while True:
        for fd, events in poller.poll():
            if fd == listener.fileno():
                accept()
            elif fd in socks:
                try:
                    serve(fd, events)
                except OSError:
                    close(fd)


# The values the server shares with this program (sandbox/protocol.rs, whose unit test
# checks them here): the status of a killed process, the start of each trailer, the exit
# status when no payload comes, and the longest header line a session reads.
_KILLED = 137
_TRAILER = b"\0pyexec-exit "
_NO_PAYLOAD = 125
_HEADER_MAX = 256
# Seconds an interrupted call has to end before the child is killed.
_INTERRUPT_GRACE = 2.0
# Output a session's child writes between calls, kept per stream for the next call.
_BETWEEN_CALLS = 65536
# A byte on stdin during a call that asks for an interrupt; skipped between calls (it was
# meant for a call that ended meanwhile).
_INTERRUPT = b"!"


def _wait_status(status):
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) & 0xFF


def _session(idle, exit):
    """Serves calls in one long-lived child until it ends, stdin closes or `idle` seconds
    pass without a call; never returns."""
    import _signal as signal
    import select
    import time

    call_read, call_write = os.pipe()
    done_read, done_write = os.pipe()
    # The container's stdin carries the next calls' payloads: never the program's.
    null = os.open("/dev/null", os.O_RDONLY)
    pid, out_read, err_read = _fork(
        lambda: _session_child(call_read, done_write, exit),
        null,
        (call_read, done_write),
        (call_write, done_read),
    )
    streams = {out_read: 1, err_read: 2}
    held = {1: bytearray(), 2: bytearray()}
    dropped = {1: 0, 2: 0}
    seen = {}
    calls = 0
    poller = select.poll()
    for fd in (0, out_read, err_read, done_read):
        poller.register(fd, select.POLLIN)
    registered = {0, out_read, err_read, done_read}

    def forget(fd):
        if fd in registered:
            poller.unregister(fd)
            registered.discard(fd)

    def gone(status):
        # The interpreter ended between calls: nobody to tell; the session is over.
        exit(_wait_status(status))

    while True:
        # Between calls: hold what a background thread writes, wait for the next header.
        idle_until = time.monotonic() + idle
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if now - last > 2.0:
                # A gap no poll below allows: the server froze the container between calls
                # (the engine's pause). Frozen time is not idleness; the server keeps its own
                # idle limit, and thaws the container for the next call.
                idle_until += now - last
            last = now
            left = idle_until - now
            if left <= 0:
                exit(_NO_PAYLOAD)
            first = None
            for fd, events in poller.poll(int(min(left, 0.5) * 1000) + 1):
                if fd == 0:
                    first = os.read(0, 1)
                    if not first:
                        exit(_NO_PAYLOAD)  # the server is gone
                    if first == _INTERRUPT:
                        first = None  # meant for a call that ended meanwhile
                elif fd in streams:
                    data = os.read(fd, 65536)
                    if not data:
                        forget(fd)
                        continue
                    into = held[streams[fd]]
                    room = max(0, _BETWEEN_CALLS - len(into))
                    into += data[:room]
                    dropped[streams[fd]] += len(data) - min(room, len(data))
                elif fd == done_read and not os.read(fd, 65536):
                    forget(fd)
            status = _reap(pid)
            if status is not None:
                gone(status)
            if first is not None:
                break
        rest = _read_line(0)
        if rest is None:
            exit(_NO_PAYLOAD)
        header = first + rest
        fields = header.split()
        code_length, token, budget = int(fields[0]), fields[1], int(fields[2])
        input_length, timeout = int(fields[3]), int(fields[4]) / 1000.0
        code = _read_exact(0, code_length)
        data = _read_exact(0, input_length)
        if len(code) != code_length or len(data) != input_length:
            exit(_NO_PAYLOAD)
        started = time.monotonic()
        for fd in (1, 2):
            if held[fd]:
                _write_all(fd, bytes(held[fd]))
                held[fd].clear()
            if dropped[fd]:
                _write_all(2, b"pyexec: %d more bytes written between calls were dropped\n" % dropped[fd])
                dropped[fd] = 0
        calls += 1
        try:
            frame = b"%d %d %d\n" % (calls, code_length, input_length)
            _write_all(call_write, frame + code + data)
        except OSError:
            pass  # the child is gone; its status says why
        del code, data
        interrupted = False
        kill_at = None
        done = b""
        status = None
        ended = None
        while status is None and ended is None:
            now = time.monotonic()
            if not interrupted and now >= started + timeout:
                interrupted, kill_at = True, now + _INTERRUPT_GRACE
                os.kill(pid, signal.SIGINT)
            if kill_at is not None and now >= kill_at:
                kill_at = None
                os.kill(pid, signal.SIGKILL)
            for fd, events in poller.poll(50):
                if fd in streams:
                    data = os.read(fd, 65536)
                    if data:
                        _write_all(streams[fd], data)
                    else:
                        forget(fd)
                elif fd == done_read:
                    data = os.read(fd, 65536)
                    if not data:
                        forget(fd)
                    done += data
                elif fd == 0:
                    data = os.read(0, 4096)
                    if not data:
                        # The server is gone: so is the session.
                        os.kill(pid, signal.SIGKILL)
                        exit(_NO_PAYLOAD)
                    if not interrupted:
                        interrupted, kill_at = True, time.monotonic() + _INTERRUPT_GRACE
                        os.kill(pid, signal.SIGINT)
            # "<call> <status>" lines: the interpreter's word, but the program could write
            # here too, so only a well-formed line for this call counts (a late line of an
            # earlier call, or garbage, is dropped).
            while status is None and b"\n" in done:
                line, done = done.split(b"\n", 1)
                fields = line.split()
                if (
                    len(fields) == 2
                    and fields[0] == b"%d" % calls
                    and fields[1].isdigit()
                    and len(fields[1]) < 4
                ):
                    status = int(fields[1]) & 0xFF
            if len(done) > 4096:
                done = b""
            if status is None:
                reaped = _reap(pid)
                if reaped is not None:
                    ended = _wait_status(reaped)
        # Whatever the call wrote before it ended is in the pipes now: pass it on.
        late = 1 << 20
        while late > 0:
            found = False
            for fd, events in poller.poll(0):
                if fd in streams:
                    data = os.read(fd, 65536)
                    if data:
                        _write_all(streams[fd], data)
                        late -= len(data)
                        found = True
                    else:
                        forget(fd)
            if not found:
                break
        flags = b""
        if interrupted:
            flags += b" timeout"
            if ended is None:
                status = 130  # as a shell reports a program stopped by SIGINT
        if ended is not None:
            status = ended
            flags += b" ended"
            if status == _KILLED and _oom_killed():
                flags += b" oom"
        bundle = b""
        if budget > 0:
            try:
                bundle = _collect(budget, seen)
            except Exception as error:
                _write_all(2, b"pyexec runner: files could not be collected: %r\n" % (error,))
        trailer = _TRAILER + token + b" " + str(status).encode()
        for fd, tail in ((1, b" %d%s\n" % (len(bundle), flags) + bundle), (2, b"\n")):
            try:
                _write_all(fd, trailer + tail)
            except OSError:
                pass
        if ended is not None:
            exit(status)


def _pump(source, sink):
    """Copies `source` to `sink` until either ends, then closes `sink` (the program's stdin
    sees EOF)."""
    try:
        while True:
            data = os.read(source, 65536)
            if not data:
                break
            _write_all(sink, data)
    except OSError:
        pass  # the program is gone, or stopped reading
    finally:
        os.close(sink)


def _supervise():
    import _signal as signal  # the C module: `signal` imports enum, ~8 ms at start

    _set_dumpable(0)
    exit = os._exit
    # Before anything touches the environment: exec's block of it, blanked once forked.
    _IDS["environment"] = _environment_block()
    _IDS["program"], _IDS["supervisor"] = int(sys.argv[2]), int(sys.argv[3])
    # Podman adds these to every container; the server sets neither, so on any engine the
    # program sees exactly the environment the server gave.
    for name in ("container", "TERM"):
        os.environ.pop(name, None)
    # PID 1 gets only the signals it handles: SIGINT must not raise in here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _keep_deadline(int(sys.argv[1]), exit)
    if len(sys.argv) > 5 and sys.argv[4] == "session":
        _session(int(sys.argv[5]), exit)
    code_read, code_write = os.pipe()
    # The program's stdin: what follows the code on the container's, copied once the
    # supervisor has read the header (the token) and the code.
    stdin_read, stdin_write = os.pipe()

    def child():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _child(code_read, exit)

    pid, out_read, err_read = _fork(child, stdin_read, (code_read,), (code_write, stdin_write))
    header = _read_header()
    if header is None:
        _write_all(2, b"pyexec runner: no payload received\n")
        exit(_NO_PAYLOAD)
    length, token, budget = header
    try:
        _write_all(code_write, _read_exact(0, length))
    except OSError:
        pass  # the child is gone already; its status says why
    os.close(code_write)
    import _thread

    _thread.start_new_thread(_pump, (0, stdin_write))
    status = _relay(pid, {out_read: 1, err_read: 2})
    bundle = b""
    if budget > 0:
        try:
            bundle = _collect(budget)
        except Exception as error:
            _write_all(2, b"pyexec runner: files could not be collected: %r\n" % (error,))
    trailer = _TRAILER + token + b" " + str(status).encode()
    oom = b" oom" if status == _KILLED and _oom_killed() else b""
    for fd, tail in ((1, b" %d%s\n" % (len(bundle), oom) + bundle), (2, b"\n")):
        try:
            _write_all(fd, trailer + tail)
        except OSError:
            pass
    exit(status)


_supervise()
