"""Run a student's functions in a child process and bring back raw arrays.

The grader never imports a student's file. It starts a fresh interpreter
(`python -I -S -B`, scrubbed environment, a temporary working folder holding a copy
of the student's files), sends the inputs through a pipe, and reads back framed
npz results (loaded with ``allow_pickle=False`` and validated: numeric dtype,
bounded size). The child has a wall-clock limit; on timeout the whole process
group is killed. What the child prints is capped. Verdicts are computed by the
caller, in this process, after the child has gone, so a submission that patches
numpy, exits early or forges frames can only change the values it returns.

On Linux >= 5.13 the child also locks itself down with Landlock before the
student's module is imported (see `_child.py`): it can read only the Python
standard library, numpy, jax and their dependencies, write only its temporary
folder, and cannot read tinytf (where the reference solutions live), other
submissions, or signal processes outside its sandbox. Elsewhere the sandbox is the
process boundary alone, and the report says so.
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

# The exercises use numpy and jax; these distributions and everything they require
# are importable in the child, nothing else from site-packages.
ALLOWED_DISTRIBUTIONS = ("numpy", "jax", "jaxlib")
# Importable (jax needs scipy) but they would solve an exercise for the student.
BLOCKED_IMPORTS = ("tinytf", "scipy.optimize", "scipy.sparse.csgraph")

MAX_OUTPUT_BYTES = 1 << 20  # what the student's code may print (stdout and stderr together)
MAX_RESULT_BYTES = 32 << 20  # all result frames together
MAX_ARRAY_ELEMENTS = 1 << 20  # one returned array
MAX_FILE_BYTES = 64 << 20  # any file the child writes in its temporary folder
MAX_MEMORY_BYTES = 4 << 30  # the child's address space (jax runs in far less)
KEEP_OUTPUT_BYTES = 4096  # printed output kept for the report


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
    sandbox: str = "unknown"
    import_error: str | None = None
    import_where: str = ""
    status: str = "ok"  # ok | timeout | output-cap | result-cap | exited | bad-frames | no-start
    detail: str = ""
    output: str = ""  # the first KEEP_OUTPUT_BYTES of what the student's code printed
    seconds: float = 0.0


# ----------------------------------------------------------------------- the policy
def _site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    dirs = {paths["purelib"], paths["platlib"]}
    dirs |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    return sorted(d for d in dirs if os.path.isdir(d))


def _distribution_closure(names) -> list[importlib.metadata.Distribution]:
    """The distributions `names` need at run time (requirements without extras), recursively."""
    seen, todo, out = set(), list(names), []
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
    for child in sorted(path.iterdir()):
        rules += _grant(child, kind, excluded)
    return rules


@dataclass(frozen=True)
class Policy:
    """What the child may import and read; computed once per grading process."""

    sys_path: tuple[str, ...]
    blocked_imports: tuple[str, ...]  # BLOCKED_IMPORTS and every other package in site-packages
    rules: tuple[tuple[str, str], ...]  # without the child's own temporary folder


@functools.lru_cache(maxsize=1)
def policy() -> Policy:
    site_dirs = [Path(d).resolve() for d in _site_dirs()]
    dists = _distribution_closure(ALLOWED_DISTRIBUTIONS)
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
    excluded = {PACKAGE_DIR, *site_dirs}
    for blocked in BLOCKED_IMPORTS:
        parts = blocked.split(".")
        for d in site_dirs:
            excluded.add(d.joinpath(*parts))
    rules: list[tuple[str, str]] = []
    for d in site_dirs:
        rules.append((str(d), "list"))
    for e in sorted(entries):
        rules += _grant(e, "ro", excluded - set(site_dirs))
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
        for entry in d.iterdir():
            name = entry.name.split(".")[0]
            if name.isidentifier() and name not in tops:
                others.add(name)
    return Policy(
        sys_path=tuple(str(d) for d in site_dirs),
        blocked_imports=tuple(BLOCKED_IMPORTS) + tuple(sorted(others)),
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
def _encode_request(module_file: str, calls: list[Call], rules, require_sandbox: bool) -> bytes:
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
    pol = policy()
    header = {
        "module_file": module_file,
        "module_name": Path(module_file).stem.replace("-", "_"),
        "calls": specs,
        "sys_path": list(pol.sys_path),
        "rules": rules,
        "blocked_imports": list(pol.blocked_imports),
        "require_sandbox": require_sandbox,
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
            result.sandbox = _clean(header.get("sandbox", "unknown"), 200)
            if header.get("fatal"):
                result.status, result.detail = "no-sandbox", result.sandbox
            continue
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
    require_sandbox: bool = False,
) -> RunResult:
    """Import `module_file` (one of `files`) in a fresh child process and make `calls`.

    Args:
      files: the student's files, name -> contents, copied into the child's folder.
      module_file: which file holds the functions.
      calls: the calls to make, in order.
      timeout: wall-clock seconds for the whole child (start-up, import, all calls).
      sandbox: lock the child down with Landlock where the kernel supports it.
      require_sandbox: refuse to run student code where Landlock is unavailable.

    Returns:
      A RunResult; never raises for anything the student's code does.
    """
    result = RunResult()
    start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="tinytf-grade-")
    try:
        for name, data in files.items():
            Path(tmp, name).write_bytes(data)
        rules = [list(r) for r in policy().rules] + [[tmp, "rw"]] if sandbox else []
        request = _encode_request(module_file, calls, rules, require_sandbox)
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
        _kill_group(proc)  # stragglers the student's code may have forked
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
        if result.sandbox == "unknown" and result.status in ("ok", "exited", "bad-frames"):
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
