"""Run a lesson file as a notebook: jupytext converts it, nbclient executes it in a fresh kernel.

A lesson is a jupytext percent file. Opened in Jupyter (through jupytext) it is a
notebook; here the same file is converted in memory, one cell is injected after the
cell tagged `parameters` (papermill's convention, so `papermill` can drive the same
notebooks), and every cell runs in a new Python kernel. The executed notebook,
outputs and figures included, is written next to the run's metrics.json.

The notebook tools are an optional extra: `pip install 'tinytf[notebooks]'`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

TOOLS = ("jupytext", "nbformat", "nbclient", "ipykernel")


class MissingNotebookTools(RuntimeError):
    """The optional notebook packages are not installed."""


def require_notebook_tools(what: str = "running a lesson as a notebook") -> None:
    """Raise MissingNotebookTools naming the missing packages and the install command."""
    missing = [name for name in TOOLS if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingNotebookTools(
            f"{what} needs {', '.join(missing)}, which are not installed: pip install 'tinytf[notebooks]' "
            "(in a checkout: pip install -e '.[notebooks]')")


def read_lesson(path: str | os.PathLike):
    """The lesson file as an nbformat notebook (jupytext's percent format -> cells)."""
    require_notebook_tools()
    import jupytext

    return jupytext.read(str(path), fmt="py:percent")


def inject_parameters(nb, params: dict) -> None:
    """Insert a cell setting `params` right after the cell tagged "parameters" (papermill's convention)."""
    import nbformat

    index = next((i for i, cell in enumerate(nb.cells)
                  if "parameters" in cell.get("metadata", {}).get("tags", [])), None)
    if index is None:
        raise ValueError("the notebook has no cell tagged 'parameters' (a code cell starting with "
                         "'# %% tags=[\"parameters\"]'): nowhere to set quick mode, seed and variant")
    source = "# Parameters (injected)\n" + "\n".join(f"{name} = {value!r}" for name, value in params.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))


def tidy_streams(nb) -> None:
    """Drop what progress bars leave in stderr outputs: blank lines after carriage-return redraws."""
    for cell in nb.cells:
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                lines = [line.rsplit("\r", 1)[-1] for line in out["text"].split("\n")]
                out["text"] = "\n".join(line for line in lines if line.strip())
                if not out["text"]:
                    continue
                out["text"] += "\n"
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs


def _client_class():
    from nbclient import NotebookClient

    class EchoingClient(NotebookClient):
        """nbclient's client that also copies the kernel's stream output to this process's stderr."""

        echo = False

        def output(self, outs, msg, display_id, cell_index):
            if self.echo and msg["msg_type"] == "stream":
                sys.stderr.write(msg["content"]["text"])
                sys.stderr.flush()
            return super().output(outs, msg, display_id, cell_index)

    return EchoingClient


def run_notebook(source: str | os.PathLike, target: str | os.PathLike, params: dict, *,
                 cwd: str | os.PathLike | None = None, timeout: float | None = None, env: dict | None = None,
                 echo: bool = False):
    """Convert `source` (jupytext), inject `params`, execute every cell (nbclient), write `target` (.ipynb).

    Args:
      cwd: the kernel's working folder (default: this process's).
      timeout: seconds one cell may run; None: no limit.
      env: extra environment variables for the kernel.
      echo: copy the kernel's printed output (progress bars, status lines) to stderr as it comes.

    Returns:
      The executed notebook. On a failing cell the notebook is still written to `target`
      (outputs up to the error) and a RuntimeError says which cell failed and why.
    """
    require_notebook_tools()
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = read_lesson(source)
    inject_parameters(nb, params)
    client = _client_class()(nb, timeout=timeout, kernel_name="python3", coalesce_streams=True,
                             resources={"metadata": {"path": str(Path(cwd or Path.cwd()))}})
    client.echo = echo
    kernel_env = dict(os.environ, **(env or {}))
    kernel_env.pop("MPLBACKEND", None)  # the kernel's own (inline) backend, whatever the terminal uses
    target = Path(target)
    try:
        client.execute(env=kernel_env)
    except CellExecutionError as err:
        tidy_streams(nb)
        nbformat.write(nb, str(target))
        raise RuntimeError(f"{Path(source).name} failed as a notebook (the executed part is in {target}):\n"
                           f"{_strip_ansi(str(err))[-3000:]}") from None
    tidy_streams(nb)
    nbformat.write(nb, str(target))
    return nb


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def count_images(nb) -> int:
    """How many PNG outputs the executed notebook holds."""
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


__all__ = ["MissingNotebookTools", "require_notebook_tools", "read_lesson", "inject_parameters",
           "tidy_streams", "run_notebook", "count_images"]
