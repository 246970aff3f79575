"""The grader's child process: the only place where a student's code runs.

Run as ``python -I -S -B _child.py`` with the working directory set to a fresh
temporary folder that holds a copy of the student's files. It imports nothing
from tinytf (tinytf is unreadable from here), only the standard library and numpy.

Protocol (see `tinytf.grading.sandbox`, the parent side):
  stdin  <- one request: 8-byte length + JSON, 8-byte length + npz (the inputs);
  stdout -> frames: b"F" + 4-byte length + JSON header + 8-byte length + npz.
The first frame reports the protections in force; then one frame per call, in
order; then a "done" frame. Everything the student's code prints goes to stderr,
which the parent caps and shows in the report. The parent trusts none of this: it
validates every frame and computes every verdict itself, after this process has gone.

Order of events, and why:
  1. read the whole request before any student code exists;
  2. move the result channel off fd 1, so print() cannot corrupt it by accident;
  3. while still single-threaded: a new, empty network namespace (unshare; a user
     namespace too when not root), resource limits, no capabilities;
  4. Landlock (Linux >= 5.13): read only the interpreter, the standard library,
     numpy/jax and their dependencies, and the student's own files; write nothing;
     no TCP; from ABI 6 no abstract UNIX sockets or signals outside the sandbox;
  5. seccomp-bpf, on every thread: no sockets of any family (TCP, UDP, UNIX stream
     and datagram, raw, netlink), no new processes (threads only) and no exec,
     signals only to itself, no namespaces, mounts, ptrace, io_uring, memfd or bpf;
  6. import numpy, install an audit hook that names (and refuses) what the sandbox
     blocks: importing tinytf or a reference, reading outside the allowed folders,
     loading compiled code by path, sockets, processes, ctypes calls;
  7. import the student's module, call each function, send back raw arrays.
"""

import ctypes
import errno
import io
import json
import os
import platform
import struct
import sys
import traceback

_FILE_RIGHTS = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # execute, write, read, truncate, ioctl
_RO = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read file, read dir
_LIST = 1 << 3  # read dir only
_DEV = (1 << 1) | (1 << 2)  # read and write a device file (/dev/null)

# seccomp-bpf: per architecture, the audit arch, the seccomp and capset syscalls, and the
# syscalls the filter refuses. clone is allowed for threads only; clone3 answers ENOSYS so
# that the C library falls back to clone; kill and friends only at this process.
_SECCOMP = {
    "x86_64": dict(
        audit=0xC000003E, seccomp=317, capset=126, x32=True, clone=56, clone3=435,
        deny=(41, 53, 57, 58, 59, 322, 200, 434, 424, 438, 425, 426, 427, 272, 308, 101, 310, 311, 319, 321,
              298, 323, 165, 166, 155, 161, 250, 248, 249, 175, 313, 447, 428, 429, 430, 431, 432, 433),
        # socket socketpair fork vfork execve execveat tkill pidfd_open pidfd_send_signal pidfd_getfd
        # io_uring_setup/enter/register unshare setns ptrace process_vm_readv/writev memfd_create bpf
        # perf_event_open userfaultfd mount umount2 pivot_root chroot keyctl add_key request_key
        # init_module finit_module memfd_secret open_tree move_mount fsopen fsconfig fsmount fspick
        own=(62, 234, 129, 297),  # kill tgkill rt_sigqueueinfo rt_tgsigqueueinfo
    ),
    "aarch64": dict(
        audit=0xC00000B7, seccomp=277, capset=91, x32=False, clone=220, clone3=435,
        deny=(198, 199, 221, 281, 130, 434, 424, 438, 425, 426, 427, 97, 268, 117, 270, 271, 279, 280, 241, 282,
              40, 39, 41, 51, 219, 217, 218, 105, 273, 447, 428, 429, 430, 431, 432, 433),
        own=(129, 131, 138, 240),
    ),
}
_CLONE_THREAD = 0x00010000
_CLONE_NAMESPACES = 0x7E020000  # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET
_CLONE_NEWNET, _CLONE_NEWUSER = 0x40000000, 0x10000000


def _read_exact(stream, n):
    data = bytearray()
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError("request truncated")
        data += chunk
    return bytes(data)


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _network_namespace(libc):
    """A new network namespace with no interface up; needs root or an unprivileged user namespace."""
    flags = _CLONE_NEWNET if os.geteuid() == 0 else _CLONE_NEWNET | _CLONE_NEWUSER
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")
    return "an empty network namespace" + ("" if os.geteuid() == 0 else " (in a user namespace)")


def _drop_capabilities(libc):
    """Empty the effective, permitted and inheritable capability sets (matters when grading as root)."""
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = bytes(24)  # two {effective, permitted, inheritable} u32 triples, all zero
    hbuf, dbuf = ctypes.create_string_buffer(header, 8), ctypes.create_string_buffer(data, 24)
    if libc.capset(hbuf, dbuf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    return "none"


def _landlock(libc, rules):
    """Restrict this process with Landlock; returns the ABI, or raises OSError."""
    syscall = libc.syscall
    abi = syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # LANDLOCK_CREATE_RULESET_VERSION
    if abi < 1:
        raise OSError(ctypes.get_errno(), "Landlock is not available on this kernel (Linux >= 5.13 has it)")
    handled = (1 << 13) - 1
    if abi >= 2:
        handled |= 1 << 13  # refer
    if abi >= 3:
        handled |= 1 << 14  # truncate
    if abi >= 5:
        handled |= 1 << 15  # ioctl on devices
    if abi >= 6:
        attr = struct.pack("QQQ", handled, 0b11, 0b11)  # deny TCP bind/connect; scope abstract unix + signals
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
            access = {"ro": _RO, "list": _LIST, "dev": _DEV}[kind] & handled
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
    return abi


def _bpf_program(arch, pid):
    """The seccomp filter as bytes, and its length in instructions."""
    spec = _SECCOMP[arch]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, deny, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    code = []  # [op, jump-if-true label, jump-if-false label, k]

    def op(o, k=0, jt=None, jf=None):
        code.append([o, jt, jf, k])

    op(ld, 4)  # seccomp_data.arch
    op(jeq, spec["audit"], None, "deny")  # another ABI (i386 int 0x80): refuse everything
    op(ld, 0)  # seccomp_data.nr
    if spec["x32"]:
        op(jge, 0x40000000, "deny", None)  # the x32 ABI
    for nr in spec["deny"]:
        op(jeq, nr, "deny", None)
    op(jeq, spec["clone3"], "enosys", None)
    op(jeq, spec["clone"], "clone", None)
    for nr in spec["own"]:
        op(jeq, nr, "own", None)
    op(ret, allow)
    labels = {"clone": len(code)}
    op(ld, 16)  # args[0], low word: the clone flags
    op(jset, _CLONE_NAMESPACES, "deny", None)
    op(jset, _CLONE_THREAD, "allow", "deny")
    labels["own"] = len(code)
    op(ld, 16)  # args[0], low word: the pid signalled
    op(jeq, pid, "allow", None)
    op(jeq, 0, "allow", None)  # its own process group (the child leads a session of its own)
    op(jeq, (-pid) & 0xFFFFFFFF, "allow", "deny")
    labels["allow"] = len(code)
    op(ret, allow)
    labels["deny"] = len(code)
    op(ret, deny)
    labels["enosys"] = len(code)
    op(ret, enosys)
    out = []
    for i, (o, jt, jf, k) in enumerate(code):
        offsets = [0 if lab is None else labels[lab] - i - 1 for lab in (jt, jf)]
        out.append(struct.pack("HBBI", o, offsets[0], offsets[1], k))
    return b"".join(out), len(code)


def _seccomp(libc):
    arch = platform.machine()
    if arch not in _SECCOMP:
        raise OSError(0, f"no seccomp filter for the {arch} architecture")
    prog, n = _bpf_program(arch, os.getpid())
    buf = ctypes.create_string_buffer(prog, len(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(n, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    # SECCOMP_SET_MODE_FILTER with SECCOMP_FILTER_FLAG_TSYNC: every thread of the process
    if libc.syscall(_SECCOMP[arch]["seccomp"], ctypes.c_uint(1), ctypes.c_uint(1), ctypes.byref(fprog)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
    return n


def _threads():
    try:
        with open("/proc/self/status") as f:
            return int(next(line.split()[1] for line in f if line.startswith("Threads:")))
    except (OSError, StopIteration, ValueError):
        return 0


class _ImportPolicy:
    """A friendly import error for modules the exercises may not use.

    Landlock is what enforces it (the files are unreadable); this finder only turns
    the resulting PermissionError into a message that says why, and gives optional
    imports inside jax a clean ImportError to catch.
    """

    def __init__(self, blocked, forbidden=(), violations=None):
        self.blocked = tuple(blocked)
        self.forbidden = tuple(forbidden)  # tinytf and the references: an attempt is recorded, not just refused
        self.violations = violations

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if self.violations is not None and (top in self.forbidden or name.startswith("tinytf")):
            # importlib.import_module skips the C-level "import" audit event: record the attempt here
            kind = "importing tinytf or a reference solution"
            if len(self.violations) < 20:
                self.violations.append(f"{kind} ({name})"[:300])
            raise ModuleNotFoundError(f"the grader's sandbox refused this: {kind} ({name})"[:300], name=name)
        if any(name == b or name.startswith(b + ".") for b in self.blocked):
            raise ModuleNotFoundError(
                f"the grader lets exercises import only the standard library, numpy and jax "
                f"(and your own files): {name!r} is not available",
                name=name,
            )
        return None


def _audit_hook(violations, forbidden_modules, forbidden_dirs, site_dirs, allowed):
    """An audit hook that records and refuses what the sandbox blocks anyway, to say so in the report.

    Audit hooks are not a security boundary (Landlock and seccomp are); this one only
    names an attempt that the kernel would stop silently or with a bare errno:
    importing tinytf or a reference, reading anything in tinytf's or the instructor's
    folders, loading code (.py, .so) from a package other than numpy/jax, sockets,
    processes, signals to other processes, ctypes. numpy and jax do none of these
    (jax's optional imports are refused earlier, by `_ImportPolicy`, without a record).
    """
    busy = [False]
    forbidden_dirs = tuple(os.path.join(d, "") for d in forbidden_dirs)
    site_dirs = tuple(os.path.join(d, "") for d in site_dirs)
    allowed = tuple(os.path.join(a, "") for a in allowed)
    code_suffixes = (".py", ".pyc", ".so", ".pyd", ".pth")

    def where(path):
        """'forbidden', 'foreign package' or None for a path."""
        try:
            p = os.path.join(os.path.realpath(os.fsdecode(path)), "")
        except (TypeError, ValueError, OSError):
            return None
        if p.startswith(forbidden_dirs):
            return "forbidden"
        if p.startswith(site_dirs) and not p.startswith(allowed):
            return "foreign package"
        return None

    def note(kind, what, exc):
        if len(violations) < 20:
            violations.append(f"{kind} ({what})"[:300])
        raise exc(f"the grader's sandbox refused this: {kind} ({what})"[:300])

    def hook(event, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            if event == "import":
                name, filename = str(args[0]), args[1]
                if name.split(".")[0] in forbidden_modules or name.startswith("tinytf"):
                    note("importing tinytf or a reference solution", name, ModuleNotFoundError)
                if filename is not None and where(filename):
                    note("loading code from tinytf or another installed package", filename, ImportError)
            elif event == "open" and isinstance(args[0], (str, bytes)):
                place = where(args[0])
                if place == "forbidden" or (place and os.fsdecode(args[0]).endswith(code_suffixes)):
                    note("reading tinytf, a reference solution or another package's code",
                         os.fsdecode(args[0]), PermissionError)
            elif event.startswith("ctypes."):
                note("calling C code through ctypes", event, PermissionError)
            elif event in ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
                           "subprocess.Popen", "pty.spawn"):
                note("starting a process", event, PermissionError)
            elif event == "socket.__new__":
                note("opening a network socket", f"address family {args[1]}", PermissionError)
            elif event in ("os.kill", "os.killpg") and args[0] not in (0, os.getpid(), -os.getpid()):
                note("signalling another process", f"{event}({args[0]})", PermissionError)
        finally:
            busy[0] = False

    return hook


def _text(exc):
    """str(exc), shortened; an exception whose str() itself fails gives ''."""
    try:
        return str(exc)[:500]
    except BaseException:  # noqa: BLE001
        return ""


def _where(exc, student_file):
    """'line N in fn: code' for the deepest frame in the student's file, or ''.

    Only the student's own file is read for the line (a traceback would read the
    harness's source too, which lives in tinytf and is unreadable here).
    """
    try:
        import linecache

        frames = [(f, n) for f, n in traceback.walk_tb(exc.__traceback__) if f.f_code.co_filename == student_file]
        if not frames:
            return ""
        frame, lineno = frames[-1]
        line = linecache.getline(student_file, lineno).strip()
        return f"line {lineno} in {frame.f_code.co_name}: {line}"[:300]
    except BaseException:  # noqa: BLE001
        return ""


def _lock_down(request):
    """Apply every protection the machine allows; returns (protections, sealed)."""
    protections = {}
    libc = _libc() if sys.platform.startswith("linux") else None
    sandbox = bool(request["rules"])

    def attempt(name, fn, *args):
        if libc is None:
            protections[name] = f"off: not available on {sys.platform}"
            return False
        if not sandbox:
            protections[name] = "off: disabled"
            return False
        try:
            protections[name] = fn(*args)
            return True
        except (OSError, AttributeError) as err:  # AttributeError: a libc without this function
            protections[name] = f"off: {getattr(err, 'strerror', None) or err}"
            return False

    attempt("network namespace", _network_namespace, libc)
    import resource

    for limit, value in (
        (resource.RLIMIT_CORE, 0),  # no core dumps
        (resource.RLIMIT_FSIZE, request["file_size_cap"]),  # bounded files (pipes are not files)
        (resource.RLIMIT_AS, request["memory_cap"]),  # a MemoryError, not a swapping machine
    ):
        try:
            resource.setrlimit(limit, (value, value))
        except (ValueError, OSError):  # not every system lets a process lower every limit
            pass
    attempt("capabilities", _drop_capabilities, libc)
    threads = _threads()
    landlock = attempt("files", lambda: (
        f"Landlock ABI {_landlock(libc, request['rules'])}: reads only Python, numpy, jax and the submission; "
        "writes nothing"))
    seccomp = attempt("system calls", lambda: (
        f"seccomp ({_seccomp(libc)} instructions): no sockets of any family (TCP, UDP, UNIX), no new "
        "processes, no exec, signals only to itself"))
    if threads > 1:
        protections["threads"] = f"{threads} threads existed before the lock (Landlock covers the calling one)"
    return protections, landlock and seccomp and threads <= 1


def _flush():
    """Push what the student's code printed (buffered in sys.stdout) to the parent before a frame."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a replaced or closed stream: nothing to push
            pass


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
    for stream in (sys.stdout, sys.stderr):  # what the student prints reaches the report in order
        stream.reconfigure(line_buffering=True)

    protections, sealed = _lock_down(request)
    sys.path.extend(request["sys_path"])
    import numpy as np

    def send(header, arrays=()):
        _flush()
        buf = io.BytesIO()
        if arrays:
            np.savez(buf, *arrays)
        head = json.dumps(header).encode()
        body = buf.getvalue()
        results.write(b"F" + struct.pack(">I", len(head)) + head + struct.pack(">Q", len(body)) + body)

    inputs = np.load(io.BytesIO(payload), allow_pickle=False)
    inputs = {k: inputs[k] for k in inputs.files}

    if request.get("require_sealed") and not sealed:
        send({"protections": protections, "sealed": False, "fatal": True})
        os._exit(3)
    send({"protections": protections, "sealed": sealed})
    violations = []
    sys.meta_path.insert(0, _ImportPolicy(request["blocked_imports"], request["forbidden_modules"], violations))
    sys.path.insert(0, os.getcwd())
    sys.dont_write_bytecode = True
    if request["rules"]:
        sys.addaudithook(_audit_hook(violations, set(request["forbidden_modules"]), request["forbidden_dirs"],
                                     request["site_dirs"], request["allowed"]))

    student_file = os.path.join(os.getcwd(), request["module_file"])
    try:
        import importlib.util

        spec = importlib.util.spec_from_file_location("student_" + request["module_name"], student_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt too
        send({"import_error": f"{type(exc).__name__}: {_text(exc)}", "where": _where(exc, student_file),
              "violations": violations[:]})
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
                header.update(ok=True, tuple=isinstance(out, (tuple, list)), n=len(arrays),
                              violations=violations[:])
                send(header, arrays)
                continue
            except BaseException as exc:  # noqa: BLE001
                header.update(ok=False, error="BadResult", message=_text(exc), where="")
        header["violations"] = violations[:]
        try:
            send(header)
        except BaseException:  # noqa: BLE001 - a broken channel: nothing more to say
            os._exit(4)
    send({"done": True, "violations": violations[:]})
    results.close()
    os._exit(0)  # skip atexit hooks and finalisers the student may have installed


if __name__ == "__main__":
    main()
