"""Submissions that attack the grader: each must score 0 (or be flagged), and the grader must finish.

They run through the real sandbox (child processes sealed with Landlock and seccomp).
Attacks that need the sandbox are skipped where this machine cannot seal it; on such
a machine grading itself refuses to run without --allow-unsealed (tested at the end).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from tinytf.grading import format_report, grade, prepare
from tinytf.grading.classroom import grade_class
from tinytf.grading.instructor import CHECKOUT_INSTRUCTOR_DIR, load_instructor
from tinytf.grading.report import summary_line
from tinytf.grading.sandbox import (CHILD_SCRIPT, PACKAGE_DIR, RunResult, SandboxError, _parse_frames,
                                    _site_dirs, policy, probe)

SECRET = "attack-tests-0123456789abcdef"
INSTRUCTOR = load_instructor(CHECKOUT_INSTRUCTOR_DIR)
BY_ID = {ex.id: ex for ex in INSTRUCTOR.exercises}
SOFTMAX = BY_ID["01_softmax"]
REFERENCE = INSTRUCTOR.reference_path(SOFTMAX)

# A correct softmax of our own (not the reference), so that only the attack can cost points.
GOOD = """
import numpy as np

def softmax(x, mask=None, axis=-1):
    x = np.asarray(x, dtype=float)
    keep = np.broadcast_to(True if mask is None else np.asarray(mask, bool), x.shape)
    big = np.max(np.where(keep, x, -np.inf), axis=axis, keepdims=True)
    weights = np.exp(np.where(keep, x - np.where(np.isinf(big), 0, big), -np.inf))
    total = weights.sum(axis=axis, keepdims=True)
    return np.divide(weights, total, out=np.zeros_like(weights), where=total > 0)
"""

sealed = pytest.mark.skipif(not probe().sealed, reason=f"this machine cannot seal the sandbox: {probe().sandbox}")


def _workspace(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _grade_all(root: Path, tmp_path: Path, only, timeout=10.0):
    setup = prepare(only, secret=SECRET)
    run_dir, reports = grade_class(root, setup, out=tmp_path / "grades", timeout=timeout, jobs=2, progress=False)
    rows = {r["submission"]: r for r in csv.DictReader(open(run_dir / "grades.csv"))}
    return reports, rows


def _parent(pid) -> int:
    """The parent process id of `pid`, from /proc (field 4 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children_alive() -> list[str]:
    """Processes running this checkout's _child.py (the sandbox harness), from /proc: ours, or orphans.

    A harness whose parent is a sibling test process (another pytest-xdist worker under `-n 2`,
    grading at the same time and still waiting for it) is not ours and is not counted. Siblings are
    told apart by their parent (the xdist controller), not by PYTEST_XDIST_WORKER: xdist sets that
    variable after the worker started, so it is not in /proc/PID/environ."""
    me = os.getpid()
    controller = _parent(me)
    alive = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        pid = cmdline.split("/")[2]
        try:
            text = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(CHILD_SCRIPT) not in text:
                continue
            parent = _parent(pid)
            sibling = parent != me and _parent(parent) == controller and controller != 1
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked
        if not sibling:
            alive.append(f"{pid} (parent {parent}): {text}")
    return alive


def test_a_correct_solution_of_our_own_scores_full_marks(tmp_path):
    report = grade(_workspace(tmp_path, {SOFTMAX.filename: GOOD}), setup=prepare(["01"], secret=SECRET), timeout=30)
    assert report.total == SOFTMAX.max_points and not report.results[0].flags, format_report(report)


# ----------------------------------------------------------------------------- hangs, exits, lies
ATTACKS = {
    "sys_exit_at_import": "import sys\nsys.exit(0)\n",
    "os_exit_in_function": "import os\ndef softmax(x, mask=None, axis=-1):\n    os._exit(0)\n",
    "infinite_loop_at_import": "while True:\n    pass\n",
    "infinite_loop_in_function": "def softmax(x, mask=None, axis=-1):\n    while True:\n        pass\n",
    "prints_50_mb": "import sys\nsys.stdout.write('x' * 50_000_000)\n"
    "def softmax(x, mask=None, axis=-1):\n    return x\n",
    "raises": "raise RuntimeError('boom')\n",
    "patches_numpy_and_builtins": (
        "import builtins, numpy as np, numpy.testing\n"
        "np.allclose = lambda *a, **k: True\nnp.isclose = lambda a, b, **k: np.ones(np.shape(a), bool)\n"
        "np.testing.assert_allclose = lambda *a, **k: None\nnp.array_equal = lambda *a, **k: True\n"
        "builtins.len = lambda x: 0\nbuiltins.isinstance = lambda *a: True\n"
        "def softmax(x, mask=None, axis=-1):\n    return np.zeros_like(x)\n"
    ),
    "patches_pytest": "import pytest\npytest.approx = lambda *a, **k: None\n"
    "def softmax(x, mask=None, axis=-1):\n    return x\n",
    "fake_results_and_report": (
        "import os, sys, json, struct\n"
        "for name in ('results.json', 'grade.json'):\n"
        "    try:\n"
        "        open(name, 'w').write(json.dumps({'total': 142, 'max': 142, 'all_passed': True}))\n"
        "    except OSError:\n"
        "        pass\n"
        "print('All 73 checks passed (29 visible, 44 hidden): 142/142 points.')\n"
        "def softmax(x, mask=None, axis=-1):\n"
        "    head = json.dumps({'call': 0, 'ok': True, 'tuple': False, 'n': 1}).encode()\n"
        "    for fd in range(3, 20):\n"
        "        try:\n"
        "            os.write(fd, b'F' + struct.pack('>I', len(head)) + head + struct.pack('>Q', 0))\n"
        "        except OSError:\n"
        "            pass\n"
        "    os.write(1, b'garbage frames')\n"
        "    return x * 0 + 1\n"
    ),
    "returns_strings_and_objects": "import numpy as np\ndef softmax(x, mask=None, axis=-1):\n"
    "    return np.array(['a'] * x.size, dtype=object)\n",
    "huge_result": "import numpy as np\ndef softmax(x, mask=None, axis=-1):\n    return np.ones(6_000_000)\n",
    "forged_report_in_exception": "def softmax(x, mask=None, axis=-1):\n"
    "    raise ValueError('x\\n\\nAll 73 checks passed (29 visible, 44 hidden): 142/142 points.')\n",
    "allocates_8_gb": "import numpy as np\n"
    "def softmax(x, mask=None, axis=-1):\n    return np.ones(1 << 30) + x.sum()\n",
}


def test_attacks_score_zero_and_the_grader_finishes(tmp_path):
    root = tmp_path / "submissions"
    for name, src in ATTACKS.items():
        _workspace(root / name, {SOFTMAX.filename: src})
    timeout = 3.0
    start = time.monotonic()
    reports, rows = _grade_all(root, tmp_path, ["01"], timeout=timeout)
    elapsed = time.monotonic() - start
    assert set(reports) == set(ATTACKS)
    for name, rep in reports.items():
        assert rep.total == 0, (name, rep.to_json())
        assert not rep.all_passed and "All" not in summary_line(rep)
    # every run is bounded by its time limit (+ start-up and judging slack on a loaded machine)
    assert elapsed < len(ATTACKS) * (timeout + 3), elapsed
    notes = {name: " ".join(rep.results[0].notes) for name, rep in reports.items()}
    assert "time limit" in notes["infinite_loop_at_import"]
    assert "printed more than" in notes["prints_50_mb"]
    assert "SystemExit" in notes["sys_exit_at_import"]
    assert "pytest" in notes["patches_pytest"]
    assert "MemoryError" in format_report(reports["allocates_8_gb"])
    forged = format_report(reports["forged_report_in_exception"])
    assert "All 73 checks passed" in forged and not any(line.startswith("All") for line in forged.splitlines())
    printed = format_report(reports["fake_results_and_report"])  # shown, as what the code printed
    assert "your code printed:\n    | All 73 checks passed" in printed  # printed at import, before the calls
    assert all(r["total"] == "0" and r["01_softmax"] == "0" for r in rows.values())


def test_what_a_submission_prints_shows_up_in_the_report(tmp_path):
    src = GOOD.replace("    x = np.asarray(x, dtype=float)\n",
                       "    print('softmax got', np.shape(x), 'axis', axis)\n    x = np.asarray(x, dtype=float)\n")
    src = "print('hello from import')\n" + src + "\nfor i in range(30):\n    print('noise', i)\n"
    report = grade(_workspace(tmp_path, {SOFTMAX.filename: src}), setup=prepare(["01"], secret=SECRET), timeout=30)
    assert report.total == SOFTMAX.max_points  # printing costs nothing
    text = format_report(report)
    assert "your code printed:\n    | hello from import\n    | noise 0" in text and "noise 18" in text
    assert "noise 19" not in text  # 20 lines at most per exercise
    assert "... (more was printed; cut here)" in text  # 20 lines at most per exercise
    assert "hello from import" in json.dumps(report.to_json())


# ----------------------------------------------------------------------------- reaching for the answers
def _answers_attacks() -> dict[str, str]:
    tinytf_file = PACKAGE_DIR / "attention" / "normalizers.py"
    parts = lambda p: " + '/' + ".join(repr(x) for x in str(p).split("/"))  # noqa: E731 - no literal path
    return {
        "import_tinytf": "from tinytf.attention import softmax as _s\n" + GOOD,
        "import_reference": "import sys\n"
        f"sys.path.append({str(REFERENCE.parent)!r})\nfrom ex01_softmax import softmax\n",
        "importlib_tinytf": "import importlib\n"
        "try:\n    _m = importlib.import_module('tiny' + 'tf.attention')\nexcept Exception:\n    pass\n" + GOOD,
        "dunder_import": "try:\n    _m = getattr(__builtins__, '__imp' + 'ort__', None) or __builtins__['__imp' + 'ort__']\n"
        "    _m('tiny' + 'tf')\nexcept Exception:\n    pass\n" + GOOD,
        "exec_reference_file": f"exec(open({str(REFERENCE)!r}).read())\n",
        "exec_reference_file_hidden_path": "try:\n"
        f"    exec(open({parts(REFERENCE)}).read())\nexcept Exception:\n    pass\n" + GOOD,
        "exec_tinytf_file": "try:\n"
        f"    exec(open({parts(tinytf_file)}).read())\nexcept Exception:\n    pass\n" + GOOD,
        "read_other_files": "import glob\n"
        "src = [open(p).read() for p in glob.glob('/tmp/**/*softmax*.py', recursive=True)]\n"
        "exec(src[0])\n",
        "write_into_the_package": f"open({str(REFERENCE.with_name('_planted.py'))!r}, 'w').write('x = 1')\n",
        "kill_the_grader": "import os, signal\n"
        "try:\n    os.kill(os.getppid(), signal.SIGKILL)\nexcept Exception:\n    pass\n" + GOOD,
    }


@sealed
def test_submissions_reaching_for_tinytf_or_a_reference_get_zero(tmp_path):
    attacks = _answers_attacks()
    root = tmp_path / "subs"
    for name, src in attacks.items():
        _workspace(root / name, {SOFTMAX.filename: src})
    _workspace(root / "zz_reference_copy_elsewhere", {"notes.py": INSTRUCTOR.sources[SOFTMAX.id],
                                                     SOFTMAX.filename: "from notes import *\n"})
    planted = REFERENCE.with_name("_planted.py")
    try:
        reports, rows = _grade_all(root, tmp_path, ["01"])
        assert not planted.exists()
    finally:
        planted.unlink(missing_ok=True)
    for name in attacks:
        res = reports[name].results[0]
        assert res.points == 0, (name, res.messages())
    for name in ("import_tinytf", "importlib_tinytf", "dunder_import", "exec_reference_file_hidden_path",
                 "exec_tinytf_file", "kill_the_grader", "import_reference", "exec_reference_file"):
        res = reports[name].results[0]
        assert res.refused and any(n.startswith("refused:") for n in res.notes), (name, res.notes)
    assert "line 1: from tinytf.attention import ..." in reports["import_tinytf"].results[0].notes[0]
    dynamic = reports["importlib_tinytf"].results[0].notes[0]
    assert "tried what the sandbox forbids: importing tinytf or a reference solution (tinytf" in dynamic
    assert "reading tinytf, a reference solution" in reports["exec_reference_file_hidden_path"].results[0].notes[0]
    assert "signalling another process" in reports["kill_the_grader"].results[0].notes[0]
    # a copy in another file of the submission is the student's own module: it runs, and it is flagged
    assert rows["zz_reference_copy_elsewhere"]["total"] == str(SOFTMAX.max_points)
    assert rows["zz_reference_copy_elsewhere"]["flagged"] == "yes"
    assert "copied: notes.py: softmax" in rows["zz_reference_copy_elsewhere"]["flags"]


def _compiled_solvers() -> list[str]:
    """scipy's compiled assignment solver (_lsap) in every site-packages known here."""
    found = set()
    for d in _site_dirs():
        found |= set(glob.glob(str(d / "scipy" / "optimize" / "_lsap*.so")))
    return sorted(found)


@sealed
def test_compiled_modules_cannot_be_loaded_by_path_from_any_site_packages(tmp_path):
    solvers = _compiled_solvers()
    if not solvers:
        pytest.skip("scipy is not installed here")
    loader = """
import importlib.machinery, importlib.util, ctypes
import numpy as np

def _load(path):
    loader = importlib.machinery.ExtensionFileLoader("_lsap", path)
    spec = importlib.util.spec_from_file_location("_lsap", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module

def hungarian_match(cost):
    rows, cols = _load(PATH).linear_sum_assignment(np.asarray(cost, np.float64), False)
    return np.asarray(rows), np.asarray(cols)
"""
    ctypes_loader = "import ctypes\nctypes.CDLL(PATH)\n" + loader
    root = tmp_path / "subs"
    for k, path in enumerate(solvers):
        _workspace(root / f"loader{k}", {"13_matching.py": loader.replace("PATH", repr(path))})
        hidden = " + ".join(repr(path[i:i + 7]) for i in range(0, len(path), 7))
        _workspace(root / f"hidden{k}", {"13_matching.py": loader.replace("PATH", f"({hidden})")})
        _workspace(root / f"ctypes{k}", {"13_matching.py": ctypes_loader.replace("PATH", f"({hidden})")})
    reports, rows = _grade_all(root, tmp_path, ["13"])
    assert len(reports) == 3 * len(solvers) >= 3
    for name, rep in reports.items():
        res = rep.results[0]
        assert res.points == 0 and res.refused, (name, res.notes)
    text = " ".join(reports["hidden0"].results[0].notes)
    assert "loading code from tinytf or another installed package" in text or "another package's code" in text


def test_a_renamed_copy_of_a_reference_is_flagged_in_the_report_and_the_csv(tmp_path):
    ex = BY_ID["02_attention"]
    source = INSTRUCTOR.sources[ex.id]
    # every local name changes; the parameters keep the stub's names (the grader passes arguments by name)
    renames = {"logits": "scores", "weights": "probs", "total": "norm", "out": "result", "_softmax": "helper", "H": "head_dim",
               "m": "top", "e": "expo", "x": "z", "q": "qq", "k": "kk", "v": "vv", "np": "xp"}
    import re

    for old, new in renames.items():
        source = re.sub(rf"\b{old}\b", new, source)
    source = source.replace('"""Reference for', '"""My own work, honest. For').replace("  #", "  # note:")
    assert "def helper" in source and "scores" in source
    root = tmp_path / "subs"
    _workspace(root / "copier", {ex.filename: source})
    reports, rows = _grade_all(root, tmp_path, ["02"])
    res = reports["copier"].results[0]
    assert res.points == res.max_points  # the code is correct...
    assert any("copied: scaled_dot_product_attention is the reference solution's" in f for f in res.flags)  # flagged
    assert "flagged" in format_report(reports["copier"]) and "flag: copied" in format_report(reports["copier"])
    assert rows["copier"]["flagged"] == "yes" and "copied" in rows["copier"]["flags"]


# ----------------------------------------------------------------------------- network
@sealed
def test_no_network_of_any_family_reaches_outside(tmp_path):
    """UNIX stream and datagram sockets to files outside the sandbox, UDP and TCP to 127.0.0.1."""
    stream_path, dgram_path = str(tmp_path / "s.sock"), str(tmp_path / "d.sock")
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(stream_path)
    stream.listen(5)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(dgram_path)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(5)
    for s in (stream, dgram, udp, tcp):
        s.setblocking(False)
    sends = {
        "unix_stream": f"s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect({stream_path!r}); "
        "s.sendall(b'leak')",
        "unix_datagram": f"s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'leak', {dgram_path!r})",
        "udp_localhost": "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.sendto(b'leak', ('127.0.0.1', {udp.getsockname()[1]}))",
        "tcp_localhost": f"s = socket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=2); "
        "s.sendall(b'leak')",
    }
    root = tmp_path / "subs"
    for name, code in sends.items():
        attack = f"import socket, builtins\ntry:\n    {code}\n    print('SENT')\nexcept Exception as e:\n" \
                 f"    print('blocked:', type(e).__name__, e)\n"
        _workspace(root / name, {SOFTMAX.filename: attack + GOOD})
    try:
        reports, rows = _grade_all(root, tmp_path, ["01"])
        for s in (stream, tcp):
            with pytest.raises(BlockingIOError):
                s.accept()
        for s in (dgram, udp):
            with pytest.raises(BlockingIOError):
                s.recv(100)
    finally:
        for s in (stream, dgram, udp, tcp):
            s.close()
    for name, rep in reports.items():
        res = rep.results[0]
        assert res.points == 0 and res.refused, (name, res.notes)
        assert any("opening a network socket" in n for n in res.notes), res.notes
        assert "SENT" not in res.output and "blocked: PermissionError" in res.output, res.output


def test_the_seccomp_filter_alone_stops_sockets_processes_and_signals():
    """The kernel, not the audit hook, is the boundary: apply only the filter and try everything."""
    import subprocess
    import sys

    if not probe().protections.get("system calls", "off").startswith("seccomp"):
        pytest.skip(f"no seccomp here: {probe().sandbox}")
    script = f"""
import os, socket, sys, threading
sys.path.insert(0, {str(CHILD_SCRIPT.parent)!r})
import _child
_child._seccomp(_child._libc())
out = {{}}
for name, family, kind in (("unix stream", 1, 1), ("unix datagram", 1, 2), ("udp", 2, 2), ("tcp", 2, 1),
                           ("udp6", 10, 2), ("netlink", 16, 3)):
    try:
        socket.socket(family, kind)
        out[name] = "open"
    except OSError as e:
        out[name] = e.errno
try:
    socket.socketpair()
    out["socketpair"] = "open"
except OSError as e:
    out["socketpair"] = e.errno
try:
    out["fork"] = "child" if os.fork() == 0 else "parent"
except OSError as e:
    out["fork"] = e.errno
try:
    os.kill(os.getppid(), 0)
    out["signal parent"] = "sent"
except OSError as e:
    out["signal parent"] = e.errno
os.kill(os.getpid(), 0)
t = threading.Thread(target=lambda: out.__setitem__("thread", "ran"))
t.start()
t.join()
print(repr(out))
"""
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's dict
    eperm = 1
    assert out == {"unix stream": eperm, "unix datagram": eperm, "udp": eperm, "tcp": eperm, "udp6": eperm,
                   "netlink": eperm, "socketpair": eperm, "fork": eperm, "signal parent": eperm, "thread": "ran"}


# ----------------------------------------------------------------------------- processes
def test_the_leftover_check_sees_a_harness_of_ours():
    """`_children_alive` must be able to fail: a process of ours naming the harness is counted."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(CHILD_SCRIPT)])
    try:
        deadline = time.monotonic() + 10
        while not _children_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        found = _children_alive()
        assert any(f"{proc.pid} (parent {os.getpid()})" in line for line in found), found
    finally:
        proc.kill()
        proc.wait()
    assert not any(line.startswith(f"{proc.pid} ") for line in _children_alive())


@sealed
def test_no_process_outlives_the_check_and_a_fork_bomb_starts_none(tmp_path):
    setsid = """
import os, time
def _escape():
    try:
        pid = os.fork()
    except Exception as e:
        print('fork refused:', type(e).__name__, e)
        return
    if pid == 0:
        os.setsid()
        time.sleep(120)
        os._exit(0)
    print('forked', pid)
_escape()
"""
    bomb = """
import os, subprocess
started = 0
for _ in range(250):
    try:
        if os.fork() == 0:
            import time
            time.sleep(120)
            os._exit(0)
        started += 1
    except Exception:
        pass
for cmd in (['sleep', '120'], ['/bin/sh', '-c', 'sleep 120 &']):
    try:
        subprocess.Popen(cmd)
        started += 1
    except Exception:
        pass
try:
    os.posix_spawn('/bin/sleep', ['sleep', '120'], {})
    started += 1
except Exception:
    pass
print('processes started:', started)
"""
    root = tmp_path / "subs"
    _workspace(root / "setsid_child", {SOFTMAX.filename: setsid + GOOD})
    _workspace(root / "fork_bomb", {SOFTMAX.filename: bomb + GOOD})
    reports, _ = _grade_all(root, tmp_path, ["01"])
    assert _children_alive() == []  # right after the check: nothing of ours is left running
    out = reports["setsid_child"].results[0].output
    assert "fork refused: PermissionError" in out and "forked" not in out, out
    assert "processes started: 0" in reports["fork_bomb"].results[0].output
    for rep in reports.values():
        res = rep.results[0]
        assert res.points == 0 and any("starting a process" in n for n in res.notes), res.notes


# ----------------------------------------------------------------------------- links, frames, policy
def test_links_and_special_files_are_not_read(tmp_path):
    """The grading process reads the workspace, so a link to a reference must not pass as a submission."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / SOFTMAX.filename).symlink_to(REFERENCE)
    attention = BY_ID["02_attention"]
    (tmp_path / "elsewhere.py").write_text(INSTRUCTOR.sources[attention.id])
    os.link(tmp_path / "elsewhere.py", ws / attention.filename)
    os.mkfifo(ws / "03_masks.py")
    report = grade(ws, setup=prepare(["01", "02", "03"], secret=SECRET), timeout=10)
    assert report.total == 0
    notes = [r.notes[0] for r in report.results]
    assert "symbolic link" in notes[0] and "hard link" in notes[1] and "not a regular file" in notes[2]


def _frame(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return b"F" + struct.pack(">I", len(head)) + head + struct.pack(">Q", len(body)) + body


def test_result_frames_are_validated_before_any_allocation():
    import io
    import zipfile

    def npz(array_bytes: bytes, compress=zipfile.ZIP_STORED) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=compress) as zf:
            zf.writestr("arr_0.npy", array_bytes)
        return buf.getvalue()

    def npy(shape, dtype="<f8", data=b"") -> bytes:
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
        return buf.getvalue() + data

    good = io.BytesIO()
    np.savez(good, np.arange(3.0))
    frames = [
        _frame({"protections": {"test": "on"}, "sealed": True}),
        _frame({"call": 0, "ok": True, "n": 1}, good.getvalue()),
        _frame({"call": 1, "ok": True, "n": 1}, npz(npy((10**12,)))),  # promises 8 TB
        _frame({"call": 2, "ok": True, "n": 1}, npz(npy((3,), "|O"))),  # objects: pickles
        _frame({"call": 3, "ok": True, "n": 1}, npz(npy((10**5,), data=bytes(8 * 10**5)), zipfile.ZIP_DEFLATED)),
        _frame({"call": 4, "ok": True, "n": 1}, b"not a zip"),
        _frame({"call": 0, "ok": True, "n": 1}, good.getvalue()),  # a second answer to call 0 is ignored
        _frame({"call": 5, "ok": False, "error": "X", "message": "line 1\nAll checks passed\x1b[2J",
                "violations": ["a\nb", 7]}),
    ]
    result = RunResult()
    _parse_frames(b"".join(frames) + b"F" + b"[" * 60000, result)
    assert result.sealed and result.protections == {"test": "on"} and result.status == "bad-frames"
    assert np.array_equal(result.calls[0].outputs[0], np.arange(3.0))
    assert all(result.calls[i].error == "BadResult" for i in (1, 2, 3, 4))
    assert "\n" not in result.calls[5].message and "\x1b" not in result.calls[5].message
    assert result.violations == ["a b", "7"]
    deep = RunResult()
    _parse_frames(_frame({"sandbox": "x"}) + b"F" + (60000).to_bytes(4, "big") + b"[" * 60000 + bytes(8), deep)
    assert deep.status == "bad-frames"  # deeply nested JSON: rejected, no RecursionError


def test_policy_leaves_out_tinytf_the_instructor_side_scipy_and_every_other_package():
    pol = policy((str(CHECKOUT_INSTRUCTOR_DIR),))
    readable = [path for path, kind in pol.rules if kind != "list"]
    assert {"tinytf", "scipy", "tinytf_instructor"} <= set(pol.blocked_imports)
    assert not any(p.startswith((str(PACKAGE_DIR), str(CHECKOUT_INSTRUCTOR_DIR))) for p in readable)
    for site in pol.site_dirs:  # nothing in any site-packages but numpy, jax and what they need
        inside = [p for p in readable if p.startswith(site + "/")]
        assert not any("/scipy" in p or "/tinytf" in p or "/sklearn" in p for p in inside), site
        assert site not in readable
    assert any(p.endswith("/numpy") for p in pol.allowed) and any(p.endswith("/jax") for p in pol.allowed)


def test_the_report_names_the_protections_in_force():
    found = probe()
    if not found.sealed:
        pytest.skip(f"this machine cannot seal the sandbox: {found.sandbox}")
    assert found.sandbox.startswith("sealed; ")
    assert found.protections["files"].startswith("Landlock ABI ")
    assert "no sockets of any family" in found.protections["system calls"]
    assert "no new processes" in found.protections["system calls"]


def test_grading_refuses_an_unsealed_sandbox_unless_allowed(monkeypatch, tmp_path, capsys):
    from tinytf.grading import register_cli, sandbox

    unsealed = RunResult(protections={"files": "off: Landlock is not available on this kernel",
                                      "system calls": "seccomp (40 instructions): ..."}, sealed=False)
    monkeypatch.setattr(sandbox, "probe", lambda forbidden=(): unsealed)
    with pytest.raises(SandboxError, match=r"cannot seal the grader's sandbox \(missing: files .*--allow-unsealed"):
        prepare(["01"])
    assert prepare(["01"], allow_unsealed=True).probe is unsealed
    import argparse

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(["grade", str(tmp_path), "--only", "01"])
    assert args.func(args) == 2
    assert "--allow-unsealed" in capsys.readouterr().err
