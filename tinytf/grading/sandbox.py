"""Run a student's functions in a sealed child process and bring back raw arrays.

The grader never imports a student's file. It starts a fresh interpreter
(`python -I -S -B`, scrubbed environment, a temporary working folder holding a copy
of the student's files), sends the inputs through a pipe, and reads back framed
npz results (loaded with ``allow_pickle=False`` and validated: numeric dtype,
bounded size). The child has a wall-clock limit; at the end the whole process
group is killed. What the child prints is kept (capped) for the report. Verdicts
are computed by the caller, in this process, after the child has gone, so a
submission that patches numpy, exits early or forges frames can only change the
values it returns.

Before the student's module is imported the child seals itself (see `_child.py`):
  - files (Landlock, Linux >= 5.13): it reads only the standard library, numpy, jax
    and their dependencies and its own folder, and writes nothing; tinytf, the
    instructor's folder, other submissions and every other installed package
    (scipy included, in any site-packages) are unreadable, so no compiled module can
    be loaded from them by path either;
  - system calls (seccomp-bpf): no socket of any family (TCP, UDP, UNIX stream and
    datagram, raw), no new process (threads only; a fork bomb or a setsid() child
    cannot start), no exec, signals only to itself;
  - an empty network namespace where the kernel allows one, and no capabilities.
The sandbox is sealed when both Landlock and seccomp are in force. `probe()` asks a
child what this machine allows; grading refuses to run student code on a machine
that cannot seal the sandbox unless the caller allows it (`--allow-unsealed`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHILD_SCRIPT = Path(__file__).with_name("_child.py")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # tinytf/: never readable by the child
CHECKOUT_INSTRUCTOR_DIR = PACKAGE_DIR.parent / "exercises" / "instructor"  # in a source checkout

# The exercises use numpy and jax: these distributions and what they need at run time
# are readable in the child, nothing else from any site-packages. scipy is a
# requirement of jax but jax.numpy runs without it, and it would solve exercises
# (scipy.optimize.linear_sum_assignment is exercise 13), so it is left out.
ALLOWED_DISTRIBUTIONS = ("numpy", "jax", "jaxlib")
LEFT_OUT_DISTRIBUTIONS = ("scipy",)
# Importing these is cheating, not a missing package: the exercise is refused (0 points).
FORBIDDEN_MODULES = ("tinytf", "tinytf_instructor", "reference")

MAX_OUTPUT_BYTES = 1 << 20  # what the student's code may print (stdout and stderr together)
MAX_RESULT_BYTES = 32 << 20  # all result frames together
MAX_ARRAY_ELEMENTS = 1 << 20  # one returned array
MAX_FILE_BYTES = 64 << 20  # any file the child writes (it can write none where Landlock works)
MAX_MEMORY_BYTES = 4 << 30  # the child's address space (jax runs in far less)
KEEP_OUTPUT_BYTES = 4096  # printed output kept for the report


class SandboxError(RuntimeError):
    """This machine cannot seal the sandbox and the caller did not allow an unsealed one."""


@dataclass(frozen=True)
class Call:
    """One function call to make in the child: kwargs are arrays or JSON scalars."""

    id: int
    function: str
    kwargs: dict


@dataclass(frozen=True)
class CallResult:
    """What came back for one call: arrays, or the exception the student's code raised."""

    outputs: tuple[np.ndarray, ...] | None = None
    is_tuple: bool = False
    error: str | None = None  # exception class name
    message: str = ""
    where: str = ""  # "line N in fn: code" in the student's file


@dataclass
class RunResult:
    """Everything the parent learned from one child process."""

    calls: dict[int, CallResult] = field(default_factory=dict)
    protections: dict[str, str] = field(default_factory=dict)  # name -> what was in force, or "off: why"
    sealed: bool = False
    import_error: str | None = None
    import_where: str = ""
    violations: list[str] = field(default_factory=list)  # what the sandbox refused, as the child saw it
    status: str = "ok"  # ok | timeout | output-cap | result-cap | exited | bad-frames | no-start | no-sandbox
    detail: str = ""
    output: str = ""  # the first KEEP_OUTPUT_BYTES of what the student's code printed
    seconds: float = 0.0

    @property
    def sandbox(self) -> str:
        """One line: sealed or not, and the protections in force."""
        if not self.protections:
            return "unknown"
        on = [f"{k}: {v}" for k, v in self.protections.items() if not v.startswith("off")]
        off = [f"{k} {v}" for k, v in self.protections.items() if v.startswith("off")]
        head = "sealed" if self.sealed else "NOT sealed"
        return head + "; " + "; ".join(on + off)


# ----------------------------------------------------------------------- the policy
def _python_dirs(root: Path) -> list[Path]:
    """site-packages / dist-packages folders of any Python under `root` (e.g. /usr/lib)."""
    found = []
    for pattern in ("python3*/site-packages", "python3*/dist-packages", "python3/dist-packages",
                    "python*/site-packages"):
        found += [p for p in root.glob(pattern) if p.is_dir()]
    return found


def _site_dirs() -> list[Path]:
    """Every site-packages this interpreter, its base interpreter and the system know of."""
    dirs = set()
    for base in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        paths = sysconfig.get_paths(vars={"base": base, "platbase": base})
        dirs |= {paths["purelib"], paths["platlib"]}
    dirs |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    try:
        import site

        dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    except (AttributeError, ImportError):  # pragma: no cover - a stripped-down site module
        pass
    out = {Path(d).resolve() for d in dirs if os.path.isdir(d)}
    for root in ("/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/local/lib64", "/lib", "/lib64",
                 os.path.join(sys.base_prefix, "lib")):
        out |= {p.resolve() for p in _python_dirs(Path(root))}
    return sorted(out)


def _distribution_closure(names, left_out=()) -> list[importlib.metadata.Distribution]:
    """The distributions `names` need at run time (requirements without extras), recursively."""
    seen, todo, out = {n.lower().replace("-", "_") for n in left_out}, list(names), []
    while todo:
        name = todo.pop().lower().replace("-", "_")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        out.append(dist)
        for req in dist.requires or []:
            if "extra ==" in req:
                continue
            req_name = req.split(";")[0].strip()
            for sep in "<>=!~ [(":
                req_name = req_name.split(sep)[0]
            todo.append(req_name)
    return out


def _grant(path: Path, kind: str, excluded: set[Path]) -> list[tuple[str, str]]:
    """Landlock rules giving `kind` access to `path` minus the `excluded` subtrees."""
    try:
        path = path.resolve()
    except OSError:
        return []
    if not path.exists() or path in excluded:
        return []
    inside = [e for e in excluded if path in e.parents]
    if not inside:
        return [(str(path), kind)]
    rules = [(str(path), "list")]  # the folder may be listed, its children decide the rest
    try:
        children = sorted(path.iterdir())
    except OSError:
        return rules
    for child in children:
        rules += _grant(child, kind, excluded)
    return rules


@dataclass(frozen=True)
class Policy:
    """What the child may import and read; computed once per grading process."""

    sys_path: tuple[str, ...]  # the site-packages folders that hold an allowed distribution
    site_dirs: tuple[str, ...]  # every site-packages known here
    allowed: tuple[str, ...]  # the allowed distributions' files and folders
    blocked_imports: tuple[str, ...]  # every other top-level name found in a site-packages folder
    forbidden_dirs: tuple[str, ...]  # tinytf and the instructor's folders
    rules: tuple[tuple[str, str], ...]  # Landlock rules, without the child's own temporary folder


def policy(extra_forbidden: tuple[str, ...] = ()) -> Policy:
    """The sandbox's policy; `extra_forbidden` adds folders (e.g. the instructor's) to keep unreadable."""
    return _policy(tuple(sorted(str(Path(p).resolve()) for p in extra_forbidden)))


@functools.lru_cache(maxsize=8)
def _policy(extra_forbidden: tuple[str, ...]) -> Policy:
    site_dirs = _site_dirs()
    dists = _distribution_closure(ALLOWED_DISTRIBUTIONS, LEFT_OUT_DISTRIBUTIONS)
    entries, tops = set(), set()
    for dist in dists:
        spec = importlib.util.find_spec(dist.metadata["Name"].lower().replace("-", "_"))
        if spec is not None and spec.origin:  # also works where a distribution lists no files
            origin = Path(spec.origin).resolve()
            entries.add(origin.parent if origin.name == "__init__.py" else origin)
            tops.add(spec.name)
        for f in dist.files or []:
            first = Path(f).parts[0]
            if first in ("..", "__pycache__"):
                continue
            entries.add(Path(dist.locate_file(first)).resolve())
            name = first.split(".")[0] if first.endswith((".py", ".so", ".pyd")) else first
            if name.isidentifier():
                tops.add(name)
    forbidden = {PACKAGE_DIR, CHECKOUT_INSTRUCTOR_DIR.resolve(), *(Path(p) for p in extra_forbidden)}
    excluded = forbidden | set(site_dirs)
    rules: list[tuple[str, str]] = []
    home_dirs = sorted({e.parent for e in entries if e.parent in site_dirs})
    for d in home_dirs:
        rules.append((str(d), "list"))  # the import system lists the folder; the entries decide the rest
    for e in sorted(entries):
        rules += _grant(e, "ro", forbidden)
    std = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"], os.path.dirname(os.__file__)}
    system = [
        "/lib",
        "/lib32",
        "/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/usr/local/lib",
        os.path.join(sys.base_prefix, "lib"),
    ]
    for p in sorted(std) + system:
        rules += _grant(Path(p), "ro", excluded)
    for p in (
        "/etc/ld.so.cache",
        "/etc/localtime",
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/stat",
        "/sys/devices/system/cpu",
        "/sys/fs/cgroup",
        "/dev/urandom",
        "/dev/random",
        "/dev/zero",
    ):
        rules.append((p, "ro"))
    rules += [("/proc/self", "ro"), ("/dev/null", "dev")]
    others = set()
    for d in site_dirs:
        try:
            names = [entry.name for entry in d.iterdir()]
        except OSError:
            continue
        for entry in names:
            name = entry.split(".")[0].split("-")[0]
            if name.isidentifier() and name not in tops:
                others.add(name)
    return Policy(
        sys_path=tuple(str(d) for d in home_dirs),
        site_dirs=tuple(str(d) for d in site_dirs),
        allowed=tuple(str(e) for e in sorted(entries)),
        blocked_imports=tuple(sorted(others | set(FORBIDDEN_MODULES) | set(LEFT_OUT_DISTRIBUTIONS))),
        forbidden_dirs=tuple(sorted(str(p) for p in forbidden)),
        rules=tuple(dict.fromkeys(rules)),
    )


def _environment(tmp: str) -> dict[str, str]:
    """A scrubbed environment: nothing of the grader's own is passed on."""
    return {
        "PATH": os.defpath,
        "HOME": tmp,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    }


# ----------------------------------------------------------------------- the request
def _encode_request(module_file: str, calls: list[Call], pol: Policy, rules, require_sealed: bool) -> bytes:
    arrays, specs = {}, []
    for call in calls:
        args = {}
        for name, value in call.kwargs.items():
            if isinstance(value, np.generic):
                value = value.item()  # numpy scalars travel as JSON numbers
            if isinstance(value, np.ndarray):
                key = f"a{len(arrays)}"
                arrays[key] = value
                args[name] = {"array": key}
            elif value is None or isinstance(value, (bool, int, float, str)):
                args[name] = {"value": value}
            else:
                raise TypeError(
                    f"argument {name!r} of {call.function} is a {type(value).__name__}: "
                    "checks may pass arrays and JSON scalars only"
                )
        specs.append({"id": call.id, "function": call.function, "args": args})
    header = {
        "module_file": module_file,
        "module_name": Path(module_file).stem.replace("-", "_"),
        "calls": specs,
        "sys_path": list(pol.sys_path),
        "site_dirs": list(pol.site_dirs),
        "allowed": list(pol.allowed),
        "forbidden_dirs": list(pol.forbidden_dirs),
        "forbidden_modules": list(FORBIDDEN_MODULES),
        "rules": rules,
        "blocked_imports": list(pol.blocked_imports),
        "require_sealed": require_sealed,
        "file_size_cap": MAX_FILE_BYTES,
        "memory_cap": MAX_MEMORY_BYTES,
    }
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    head, body = json.dumps(header).encode(), buf.getvalue()
    return struct.pack(">Q", len(head)) + head + struct.pack(">Q", len(body)) + body


# ----------------------------------------------------------------------- the results
def _validated(npz_bytes: bytes, n: int) -> tuple[np.ndarray, ...]:
    """Read n arrays from the child's npz bytes, checking every header before any data.

    Only uncompressed members named arr_0.npy .. arr_{n-1}.npy, numeric or bool
    dtypes and bounded sizes pass; nothing is unpickled and nothing is allocated
    from a size the child merely declared.
    """
    names = [f"arr_{i}.npy" for i in range(n)]
    out = []
    with zipfile.ZipFile(io.BytesIO(npz_bytes)) as zf:
        infos = {info.filename: info for info in zf.infolist()}
        if sorted(infos) != sorted(names):
            raise ValueError("unexpected entries in the result")
        for name in names:
            info = infos[name]
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > MAX_RESULT_BYTES:
                raise ValueError("compressed or oversized result entry")
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported npy version {version}")
                size = int(np.prod(shape, dtype=np.int64)) if shape else 1
                if dtype.hasobject or dtype.kind not in "biuf" or len(shape) > 8 or size > MAX_ARRAY_ELEMENTS:
                    raise ValueError(f"an array of dtype {dtype}, shape {shape} is not allowed")
                if size * dtype.itemsize > info.file_size:
                    raise ValueError("the array header promises more data than there is")
            with zf.open(info) as f:
                a = np.lib.format.read_array(f, allow_pickle=False)
            out.append(np.array(a))  # a plain, writable copy
    return tuple(out)


def _clean(text, limit: int) -> str:
    """A child's string made safe to print: one line, printable characters only."""
    return "".join(ch if ch.isprintable() else " " for ch in str(text))[:limit]


def _clean_list(values, limit: int = 20) -> list[str]:
    if not isinstance(values, list):
        return []
    return [_clean(v, 300) for v in values[:limit]]


def _parse_frames(data: bytes, result: RunResult) -> None:
    """Fill `result` from the child's frames; stop quietly at the first malformed one."""
    pos, first = 0, True
    while pos < len(data):
        try:
            if data[pos : pos + 1] != b"F":
                raise ValueError("bad frame marker")
            (hlen,) = struct.unpack(">I", data[pos + 1 : pos + 5])
            if hlen > 1 << 16:
                raise ValueError("frame header too long")
            header = json.loads(data[pos + 5 : pos + 5 + hlen])
            (blen,) = struct.unpack(">Q", data[pos + 5 + hlen : pos + 13 + hlen])
            body = data[pos + 13 + hlen : pos + 13 + hlen + blen]
            if len(body) != blen:
                raise ValueError("truncated frame")
            pos += 13 + hlen + blen
            if not isinstance(header, dict):
                raise ValueError("frame header is not an object")
        except Exception:  # noqa: BLE001 - malformed bytes, bad JSON, deep nesting: all the same
            if result.status == "ok":
                result.status = "bad-frames"
                result.detail = "the child's output channel held data the grader could not read"
            return
        if first:  # written by the harness before any student code ran
            first = False
            protections = header.get("protections")
            if isinstance(protections, dict):
                result.protections = {_clean(k, 40): _clean(v, 200) for k, v in list(protections.items())[:12]}
            result.sealed = header.get("sealed") is True
            if header.get("fatal"):
                result.status = "no-sandbox"
                result.detail = "the sandbox could not be sealed: " + result.sandbox
            continue
        # Student code ran from here on: what it reports can only add to its own record.
        for v in _clean_list(header.get("violations")):
            if v not in result.violations:
                result.violations.append(v)
        if "import_error" in header:
            result.import_error = _clean(header["import_error"], 500)
            result.import_where = _clean(header.get("where", ""), 300)
            continue
        call = header.get("call")
        if not isinstance(call, int) or call in result.calls:
            continue  # unknown or repeated call ids: the first answer stands
        if header.get("ok") is True:
            n = header.get("n")
            if not isinstance(n, int) or not 1 <= n <= 8:
                continue
            try:
                outputs = _validated(body, n)
            except Exception as err:  # noqa: BLE001 - anything np.load can raise on bad bytes
                result.calls[call] = CallResult(error="BadResult", message=f"unreadable result data ({err})"[:300])
                continue
            result.calls[call] = CallResult(outputs=outputs, is_tuple=bool(header.get("tuple")))
        else:
            result.calls[call] = CallResult(
                error=_clean(header.get("error", "Error"), 100),
                message=_clean(header.get("message", ""), 500),
                where=_clean(header.get("where", ""), 300),
            )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_student(
    files: dict[str, bytes],
    module_file: str,
    calls: list[Call],
    *,
    timeout: float = 30.0,
    sandbox: bool = True,
    require_sealed: bool = True,
    forbidden: tuple[str, ...] = (),
) -> RunResult:
    """Import `module_file` (one of `files`) in a fresh child process and make `calls`.

    Args:
      files: the student's files, name -> contents, copied into the child's folder.
      module_file: which file holds the functions.
      calls: the calls to make, in order.
      timeout: wall-clock seconds for the whole child (start-up, import, all calls).
      sandbox: apply the protections (False only for the grader's own tests of trusted code).
      require_sealed: the child stops before importing the student's code when the
        sandbox cannot be sealed on this machine.
      forbidden: more folders the child must not read (the instructor's).

    Returns:
      A RunResult; never raises for anything the student's code does.
    """
    result = RunResult()
    start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="tinytf-grade-")
    try:
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        pol = policy(forbidden)
        rules = [list(r) for r in pol.rules] + [[tmp, "ro"]] if sandbox else []
        request = _encode_request(module_file, calls, pol, rules, require_sealed and sandbox)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(CHILD_SCRIPT)],
                cwd=tmp,
                env=_environment(tmp),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            result.status, result.detail = "no-start", f"could not start Python: {err}"
            return result
        out, printed, printed_total = _pump(proc, request, start + timeout, result)
        _kill_group(proc)  # the child and anything in its process group (it can start no process)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait
            pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
        result.output = printed.decode("utf-8", "replace")
        _parse_frames(out, result)
        if result.status == "ok" and proc.returncode not in (0, None):
            code = proc.returncode
            result.status = "exited"
            result.detail = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        if result.status == "ok" and len(result.calls) < len(calls) and result.import_error is None:
            result.status = "exited"
            result.detail = f"the process ended early (exit code {proc.returncode})"
        if not result.protections and result.status in ("ok", "exited", "bad-frames"):
            # No frame at all: the harness itself failed before any student code ran.
            lines = [ln for ln in result.output.splitlines() if ln.strip()]
            result.status = "no-start"
            result.detail = "the grader's child process failed before running your code: " + _clean(
                lines[-1] if lines else f"exit code {proc.returncode}", 300
            )
        if printed_total > MAX_OUTPUT_BYTES:
            result.status = "output-cap"
            result.detail = f"printed more than {MAX_OUTPUT_BYTES // 1024} KiB; the process was stopped"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        result.seconds = time.monotonic() - start
    return result


@functools.lru_cache(maxsize=8)
def probe(forbidden: tuple[str, ...] = ()) -> RunResult:
    """What this machine allows: a child that seals itself and imports an empty module."""
    return run_student({"probe.py": b""}, "probe.py", [], timeout=60.0, require_sealed=False, forbidden=forbidden)


def require_sealed(allow_unsealed: bool, forbidden: tuple[str, ...] = ()) -> RunResult:
    """Probe the sandbox; raise SandboxError when it cannot be sealed and that was not allowed."""
    found = probe(tuple(forbidden))
    if found.sealed or allow_unsealed:
        return found
    if found.status not in ("ok", "exited") or not found.protections:
        why = f"the sandbox's child process did not start ({found.detail or found.status})"
    else:
        missing = [f"{k} ({v[4:].strip(': ')})" for k, v in found.protections.items() if v.startswith("off")]
        why = "missing: " + ", ".join(missing) if missing else found.sandbox
    raise SandboxError(
        f"this machine cannot seal the grader's sandbox ({why}). Sealing needs Linux with Landlock "
        "(kernel >= 5.13) and seccomp. Student code would run with fewer protections: its files could read "
        "other files or reach the network. To grade anyway, pass --allow-unsealed (the report then says "
        "which protections were missing)"
    )


def _pump(proc, request: bytes, deadline: float, result: RunResult):
    """Feed stdin, read stdout/stderr with caps until the child exits or the deadline passes."""
    sel = selectors.DefaultSelector()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        os.set_blocking(stream.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    out, printed, printed_total, sent = bytearray(), bytearray(), 0, 0
    exited_at = None
    while sel.get_map():
        now = time.monotonic()
        if now > deadline:
            result.status, result.detail = "timeout", "the time limit was reached; the process was killed"
            break
        if exited_at is None and proc.poll() is not None:
            exited_at = now
        if exited_at is not None and now - exited_at > 0.5:
            break  # the child is gone; a grandchild holding the pipes open gets no more time
        for key, _ in sel.select(timeout=0.05):
            stream = key.fileobj
            if stream is proc.stdin:
                try:
                    sent += os.write(stream.fileno(), request[sent : sent + 65536])
                except (BrokenPipeError, OSError):
                    sent = len(request)
                if sent >= len(request):
                    sel.unregister(stream)
                    stream.close()
                continue
            try:
                chunk = os.read(stream.fileno(), 1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                sel.unregister(stream)
                continue
            if stream is proc.stdout:
                out += chunk
                if len(out) > MAX_RESULT_BYTES:
                    result.status, result.detail = "result-cap", "returned more data than any exercise needs"
                    sel.close()
                    return bytes(out[:MAX_RESULT_BYTES]), bytes(printed), printed_total
            else:
                printed_total += len(chunk)
                if len(printed) < KEEP_OUTPUT_BYTES:
                    printed += chunk[: KEEP_OUTPUT_BYTES - len(printed)]
                if printed_total > MAX_OUTPUT_BYTES:
                    sel.close()
                    return bytes(out), bytes(printed), printed_total
    sel.close()
    return bytes(out), bytes(printed), printed_total
