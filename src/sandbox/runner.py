# The program every execution container starts: `python3 -u -c <this file>`.
# It reads one payload from stdin -- a line with the code's length in bytes, then the code --
# writes the code to /tmp/main.py and runs it as __main__ in this same interpreter (one
# interpreter start per call). Whatever follows the code on stdin is the program's own stdin.
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
    return int(header)


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


def _run():
    import traceback
    import types

    _whole_write_streams()
    source = _read_exact(_read_header())
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
        traceback.print_exception(type(error), error, None)
        sys.exit(1)
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as error:
        # Drop this runner's own frame so the traceback starts at the user's code.
        tb = error.__traceback__.tb_next if error.__traceback__ else None
        traceback.print_exception(type(error), error, tb)
        sys.exit(1)


_run()
