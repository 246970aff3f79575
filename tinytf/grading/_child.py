"""The grader's child process: the only place where a student's code runs.

Run as ``python -I -S -B _child.py`` with the working directory set to a fresh
temporary folder that holds a copy of the student's files. It imports nothing
from tinytf (it must work where tinytf cannot be read), only the standard library
and numpy.

Protocol (see `tinytf.grading.sandbox`, the parent side):
  stdin  <- one request: 8-byte length + JSON, 8-byte length + npz (the inputs);
  stdout -> frames: b"F" + 4-byte length + JSON header + 8-byte length + npz.
The first frame reports the sandbox; then one frame per call, in order; then a
"done" frame. Everything the student's code prints goes to stderr, which the
parent caps. The parent trusts none of this: it validates every frame and
computes every verdict itself, after this process has gone.

Order of events, and why:
  1. read the whole request before any student code exists;
  2. move the result channel off fd 1, so print() cannot corrupt it by accident;
  3. import numpy, then lock the process down (Landlock, Linux >= 5.13): read only
     the interpreter, the standard library, numpy/jax and their dependencies, write
     only the temporary folder; no TCP, no signals or abstract sockets outside the
     sandbox. tinytf itself (with the reference solutions) is unreadable;
  4. import the student's module, call each function, send back raw arrays.
"""

import ctypes
import io
import json
import os
import struct
import sys
import traceback

_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # execute, write, read, truncate, ioctl
_RO = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_LIST = 1 << 3  # read dir only
_DEV = (1 << 1) | (1 << 2)  # read and write a device file (/dev/null)


def _read_exact(stream, n):
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError("request truncated")
        data += chunk
    return bytes(data)


def _landlock(rules, scope_signals=True):
    """Restrict this process with Landlock; returns a description, or raises OSError."""
    if not sys.platform.startswith("linux"):
        raise OSError(0, f"Landlock is Linux only (this is {sys.platform})")
    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    abi = syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not available on this kernel")
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= 1 << 13  # refer
    if abi >= 3:
        handled |= 1 << 14  # truncate
    if abi >= 5:
        handled |= 1 << 15  # ioctl on devices
    if abi >= 6:
        attr = struct.pack("QQQ", handled, 0b11, 0b11 if scope_signals else 0b01)  # deny TCP; scope unix+signals
    elif abi >= 4:
        attr = struct.pack("QQ", handled, 0b11)
    else:
        attr = struct.pack("Q", handled)
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = syscall(444, buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for path, kind in rules:
            access = {"ro": _RO, "list": _LIST, "dev": _DEV, "rw": handled}[kind] & handled
            try:
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path that does not exist here needs no rule
            try:
                if not os.path.isdir(path):
                    access &= _FILE_RIGHTS
                if not access:
                    continue
                rule = ctypes.create_string_buffer(struct.pack("=Qi", access, pfd), 12)
                if syscall(445, ctypes.c_int(fd), ctypes.c_int(1), rule, ctypes.c_uint32(0)) < 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
            finally:
                os.close(pfd)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if syscall(446, ctypes.c_int(fd), ctypes.c_uint32(0)) < 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(fd)
    return f"landlock ABI {abi}"


class _ImportPolicy:
    """A friendly import error for modules the exercises may not use.

    Landlock is what enforces it (the files are unreadable); this finder only turns
    the resulting PermissionError into a message that says why, and gives optional
    imports inside jax a clean ImportError to catch.
    """

    def __init__(self, blocked):
        self.blocked = tuple(blocked)

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in self.blocked):
            raise ModuleNotFoundError(
                f"the grader lets exercises import only the standard library, numpy and jax "
                f"(and your own files): {name!r} is not available",
                name=name,
            )
        return None


def _text(exc):
    """str(exc), shortened; an exception whose str() itself fails gives ''."""
    try:
        return str(exc)[:500]
    except BaseException:  # noqa: BLE001
        return ""


def _where(exc, student_file):
    """'line N in fn: code' for the deepest frame in the student's file, or ''."""
    try:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == student_file]
        if not frames:
            return ""
        f = frames[-1]
        return f"line {f.lineno} in {f.name}: {(f.line or '').strip()}"[:300]
    except BaseException:  # noqa: BLE001
        return ""


def main():
    stdin = sys.stdin.buffer
    (n,) = struct.unpack(">Q", _read_exact(stdin, 8))
    request = json.loads(_read_exact(stdin, n))
    (n,) = struct.unpack(">Q", _read_exact(stdin, 8))
    payload = _read_exact(stdin, n)

    # The result channel: a private copy of fd 1; fd 1 itself now points at stderr.
    results = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    os.set_inheritable(results.fileno(), False)

    import resource

    for limit, value in (
        (resource.RLIMIT_CORE, 0),  # no core dumps in the temp folder
        (resource.RLIMIT_FSIZE, request["file_size_cap"]),  # bounded files (pipes are not files)
        (resource.RLIMIT_AS, request["memory_cap"]),  # a MemoryError, not a swapping machine
    ):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):  # not every system lets a process lower every limit
            pass
    sys.path.extend(request["sys_path"])
    import numpy as np

    def send(header, arrays=()):
        buf = io.BytesIO()
        if arrays:
            np.savez(buf, *arrays)
        head = json.dumps(header).encode()
        body = buf.getvalue()
        results.write(b"F" + struct.pack(">I", len(head)) + head + struct.pack(">Q", len(body)) + body)

    inputs = np.load(io.BytesIO(payload), allow_pickle=False)
    inputs = {k: inputs[k] for k in inputs.files}

    try:
        sandbox = _landlock([tuple(r) for r in request["rules"]]) if request["rules"] else "none (disabled)"
    except OSError as err:
        if request.get("require_sandbox"):
            send({"sandbox": f"none: {err}", "fatal": True})
            os._exit(3)
        sandbox = f"none: {err}"
    send({"sandbox": sandbox})
    sys.meta_path.insert(0, _ImportPolicy(request["blocked_imports"]))
    sys.path.insert(0, os.getcwd())
    sys.dont_write_bytecode = True

    student_file = os.path.join(os.getcwd(), request["module_file"])
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("student_" + request["module_name"], student_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
        send({"import_error": f"{type(exc).__name__}: {_text(exc)}", "where": _where(exc, student_file)})
        results.close()
        os._exit(0)

    for call in request["calls"]:
        header = {"call": call["id"]}
        try:
            fn = getattr(module, call["function"], None)
            if not callable(fn):
                raise AttributeError(f"{request['module_file']} defines no function {call['function']!r}")
            kwargs = {}
            for name, spec_ in call["args"].items():
                kwargs[name] = inputs[spec_["array"]] if "array" in spec_ else spec_["value"]
            out = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a function is an answer too
            header.update(ok=False, error=type(exc).__name__, message=_text(exc), where=_where(exc, student_file))
        else:
            try:
                parts = list(out) if isinstance(out, (tuple, list)) else [out]
                arrays = [np.asarray(p) for p in parts]
                bad = [str(a.dtype) for a in arrays if a.dtype.kind not in "biuf"]
                if bad:
                    raise TypeError(f"an array of dtype {bad[0]}; expected numbers or booleans")
                if len(arrays) > 8:
                    raise TypeError(f"a sequence of {len(arrays)} values; no exercise returns more than 8")
                header.update(ok=True, tuple=isinstance(out, (tuple, list)), n=len(arrays))
                send(header, arrays)
                continue
            except BaseException as exc:  # noqa: BLE001
                header.update(ok=False, error="BadResult", message=_text(exc), where="")
        try:
            send(header)
        except BaseException:  # noqa: BLE001 - a broken channel: nothing more to say
            os._exit(4)
    send({"done": True})
    results.close()
    os._exit(0)  # skip atexit hooks and finalisers the student may have installed


if __name__ == "__main__":
    main()
