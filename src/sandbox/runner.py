# The program every execution container starts: `python3 -u -c <this file>`.
# It reads one payload from stdin -- a line with the code's length in bytes and the call's
# token, then the code -- writes the code to /tmp/main.py and runs it as __main__ in this same
# interpreter (one interpreter start per call). Whatever follows the code on stdin is the
# program's own stdin. When the program is over (threads joined, atexit handlers run, output
# flushed) it ends both output streams with a trailer, NUL "pyexec-exit <token> <status>" LF,
# so the server can answer without waiting for the container to stop; then it exits at once.
# A program that never reaches the trailer (killed, os._exit) is simply waited for.
import os
import sys


def _read_exact(count):
    chunks = []
    while count > 0:
        chunk = os.read(0, count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _read_header():
    header = b""
    while not header.endswith(b"\n"):
        byte = os.read(0, 1)
        if not byte:
            sys.stderr.write("pyexec runner: no payload received\n")
            sys.exit(125)
        header += byte
    length, token = header.split()
    return int(length), token


class _WholeWrites:
    """A raw writer for fd 1 or 2 that writes everything, in pieces of at most PIPE_BUF.

    Writes up to PIPE_BUF are atomic on a pipe, so none is ever partial. That matters under
    gVisor: Debian 12's runsc drops whatever a single pipe write carries past 64 KiB.
    """

    def __init__(self, fd):
        self._fd = fd

    def write(self, data):
        view = memoryview(data).cast("B")
        total = len(view)
        while view:
            view = view[os.write(self._fd, view[:4096]) :]
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


def _finish(status, token):
    """Ends the program as the interpreter would, then marks the end of both streams."""
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
    trailer = b"\0pyexec-exit " + token + b" " + str(status).encode() + b"\n"
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            stream.flush()
        except BaseException:
            pass
        try:
            os.write(fd, trailer)
        except OSError:
            pass
    os._exit(status)


def _print_exception(error, tb):
    # Imported only here: traceback (with linecache, tokenize, re) costs ~10 ms at start.
    import traceback

    traceback.print_exception(type(error), error, tb)


def _run():
    import types

    _whole_write_streams()
    length, token = _read_header()
    source = _read_exact(length)
    path = "/tmp/main.py"
    with open(path, "wb") as file:
        file.write(source)
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path[0] = os.path.dirname(path)
    try:
        code = compile(source, path, "exec")
    except (SyntaxError, ValueError) as error:
        _print_exception(error, None)
        _finish(1, token)
    del source
    status = 0
    try:
        exec(code, main.__dict__)
    except SystemExit as error:
        status = _exit_status(error)
    except BaseException as error:
        # Drop this runner's own frame so the traceback starts at the user's code.
        tb = error.__traceback__.tb_next if error.__traceback__ else None
        _print_exception(error, tb)
        status = 1
    _finish(status, token)


_run()
