"""`tinytf course build`: the whole course as a static web site, executed as it runs today.

Every lesson runs as a notebook (`tinytf.apps.notebook`: jupytext + nbclient, quick mode by
default), and nbconvert renders each executed notebook to one HTML page: the lesson's text,
its code, the measured tables and the figures (embedded in the page). An index page lists
the lessons with how many of their claims held. The site is plain files; publish the folder
anywhere that serves static files (GitHub Pages, a university web space), or open index.html.

    site/index.html                 the lessons, with claims held and run times
    site/NN_name.html               one page per lesson
    site/runs/ID/                   each lesson's run folder: metrics.json, the PNGs, the .ipynb

Nothing is downloaded to build the site. The pages load MathJax (for the equations) from a
CDN when a reader opens them; `--mathjax-url` points them at a copy you host instead.
"""

from __future__ import annotations

import datetime
import html
import json
import os
import shutil
import sys
from pathlib import Path

from tinytf.apps.args import nonnegative_int, positive_float, writable_dir
from tinytf.apps.lessons import (LESSONS, available_lessons, latest_run, run_lesson_notebook, versions)
from tinytf.apps.notebook import MissingNotebookTools, require_notebook_tools
from tinytf.progress import progress_bar, quiet

# The lab template without the two scripts a lesson page never uses (require.js for widgets,
# mermaid for diagrams): the only script a page loads is MathJax.
_PAGE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block body_header -%}
{{ super() }}
<nav style="padding: 0.6em 1em; font-family: sans-serif; border-bottom: 1px solid #ddd">
<a href="index.html">&larr; all lessons</a> &nbsp;|&nbsp; {{ resources.tinytf_links }}</nav>
{%- endblock body_header -%}
"""


def _exporter(mathjax_url: str | None):
    try:
        import jinja2
        from nbconvert import HTMLExporter
    except ModuleNotFoundError as err:
        raise MissingNotebookTools(f"building the course needs nbconvert ({err.name} is missing): "
                                   "pip install 'tinytf[notebooks]'") from None
    options = {"template_name": "lab", "template_file": "tinytf_page.html.j2",
               "extra_loaders": [jinja2.DictLoader({"tinytf_page.html.j2": _PAGE_TEMPLATE})]}
    if mathjax_url:
        options["mathjax_url"] = mathjax_url
    return HTMLExporter(**options)


def _empty_folder(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{str(out)!r} is not an empty folder: the course is built into a new or empty folder "
                         "(remove the old site, or choose another --out)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_site(runs: dict[str, str | os.PathLike], out: str | os.PathLike, *, mathjax_url: str | None = None,
               command: str | None = None) -> Path:
    """Render already executed lesson runs into a static site in `out` (a new or empty folder).

    Args:
      runs: {lesson id: run folder} for run folders written by `run_lesson_notebook` (each holds
        metrics.json, its figures and the executed NN_name.ipynb). They are copied into out/runs/.
      mathjax_url: where pages load MathJax from (default: nbconvert's CDN address).

    Returns:
      The path of index.html.
    """
    require_notebook_tools("building the course")
    import nbformat

    out = _empty_folder(Path(out))
    exporter = _exporter(mathjax_url)
    rows = []
    for lesson_id, run_dir in runs.items():
        info = LESSONS[lesson_id]
        run_dir = Path(run_dir)
        notebook = run_dir / (Path(info.file).stem + ".ipynb")
        if not notebook.is_file():
            raise FileNotFoundError(f"{run_dir} holds no executed notebook {notebook.name}: run the lesson with "
                                    "`tinytf lesson ID --notebook` (or build the course without --from-runs)")
        record = json.loads((run_dir / "metrics.json").read_text())
        shutil.copytree(run_dir, out / "runs" / lesson_id)
        page = Path(info.file).stem + ".html"
        links = (f'<a href="runs/{lesson_id}/{notebook.name}">notebook (.ipynb)</a> &nbsp;|&nbsp; '
                 f'<a href="runs/{lesson_id}/metrics.json">metrics.json</a>')
        body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                              resources={"metadata": {"name": info.title},
                                                         "tinytf_links": links})
        (out / page).write_text(body, encoding="utf-8")
        rows.append((info, record, page))
    index = out / "index.html"
    index.write_text(_index_html(rows, command), encoding="utf-8")
    return index


def _index_html(rows, command: str | None) -> str:
    esc = html.escape
    lines = []
    for info, record, page in rows:
        held = sum(c["holds"] for c in record["claims"])
        status = "all hold" if held == len(record["claims"]) else "<b>some fail</b>"
        skipped = f"; {len(record.get('skipped', []))} condition(s) only in full mode" if record.get("skipped") else ""
        lines.append(f"<tr><td><a href=\"{esc(page)}\">{esc(info.title)}</a><br><code>{esc(info.id)}</code></td>"
                     f"<td>{esc(info.shows)}</td><td>{held} / {len(record['claims'])} ({status}){esc(skipped)}</td>"
                     f"<td>{record['runtime_s']:.0f} s</td></tr>")
    first = rows[0][1] if rows else {}
    mode = "quick" if first.get("quick", True) else "full"
    built = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    made_by = ", ".join(f"{k} {v}" for k, v in (first.get("versions") or versions()).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tinytf: see attention fail, then fix it</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; padding: 0 1em; line-height: 1.45 }}
table {{ border-collapse: collapse; width: 100% }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.5em; text-align: left; vertical-align: top }}
footer {{ color: #555; font-size: 0.85em; margin-top: 2em }}
</style></head><body>
<h1>tinytf: see attention fail, then fix it</h1>
<p>Each lesson trains small transformers from scratch, reproduces one way attention fails with the metric
its paper defines, applies the published fix and measures again. Every page below was executed when this
site was built ({mode} mode, seed {first.get('seed', 0)}); its numbers and figures are what that run measured,
and each claim's verdict is computed from its measured value.</p>
<table><tr><th>lesson</th><th>what you see happen</th><th>claims that held</th><th>run time</th></tr>
{chr(10).join(lines)}
</table>
<footer>Built {esc(built)}{' with <code>' + esc(command) + '</code>' if command else ''}.<br>{esc(made_by)}</footer>
</body></html>
"""


def build_course(out: str | os.PathLike = "site", *, quick: bool = True, seed: int = 0,
                 lessons: list[str] | None = None, from_runs: str | os.PathLike | None = None,
                 mathjax_url: str | None = None, timeout: float | None = None, command: str | None = None) -> Path:
    """Execute every lesson as a notebook (quick mode by default) and render the site into `out`.

    Args:
      lessons: lesson ids (default: all, in course order).
      from_runs: do not execute: use each lesson's latest run under this runs root that holds an
        executed notebook (from `tinytf lesson ID --notebook`).
      timeout: seconds one notebook cell may run.

    Returns:
      The path of index.html.
    """
    require_notebook_tools("building the course")
    ids = lessons or [info.id for info in available_lessons()]
    unknown = [i for i in ids if i not in LESSONS]
    if unknown:
        raise ValueError(f"unknown lesson(s) {unknown}; available: {', '.join(LESSONS)}")
    out = _empty_folder(Path(out))
    runs = {}
    if from_runs is not None:
        for lesson_id in ids:
            run = latest_run(lesson_id, from_runs)
            if run is None:
                raise FileNotFoundError(f"no run of {lesson_id!r} under {from_runs}: run "
                                        f"`tinytf lesson {lesson_id} --quick --notebook --out {from_runs}`")
            runs[lesson_id] = run
    else:
        scratch = out / ".runs"
        bar = progress_bar(len(ids), desc="course", unit="lesson")
        for lesson_id in ids:
            bar.set_postfix_str(lesson_id)
            with quiet():  # the pages keep only what the lessons show, not progress bars
                _, runs[lesson_id], _ = run_lesson_notebook(lesson_id, quick=quick, seed=seed,
                                                            run_dir=scratch / lesson_id, timeout=timeout,
                                                            command=command, echo=False)
            bar.update(1)
        bar.close()
    site = out / ".site"
    index = build_site(runs, site, mathjax_url=mathjax_url, command=command)
    for item in site.iterdir():  # move the finished site into place
        item.rename(out / item.name)
    site.rmdir()
    if from_runs is None:
        shutil.rmtree(out / ".runs")
    return out / index.name


def _cmd_build(args) -> int:
    try:
        index = build_course(args.out, quick=not args.full, seed=args.seed, lessons=args.only,
                             from_runs=args.from_runs, mathjax_url=args.mathjax_url, timeout=args.timeout,
                             command=getattr(args, "command_line", None))
    except (ValueError, FileNotFoundError, MissingNotebookTools) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a lesson's cell failed
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote the course to {index.parent}/ (open {index}); pages load MathJax from "
          f"{args.mathjax_url or 'a CDN (--mathjax-url to change)'}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("course", help="the course as a static web site")
    csub = p.add_subparsers(dest="course", metavar="WHAT", required=True)
    b = csub.add_parser("build", help="execute every lesson as a notebook and render a static HTML site")
    b.add_argument("--out", type=writable_dir, default=Path("site"),
                   help="a new or empty folder for the site (default site/)")
    b.add_argument("--full", action="store_true", help="full mode (minutes per lesson) instead of quick mode")
    b.add_argument("--seed", type=nonnegative_int, default=0)
    b.add_argument("--only", nargs="+", metavar="ID", default=None, help="these lessons only (default: all)")
    b.add_argument("--from-runs", type=Path, default=None, metavar="DIR",
                   help="execute nothing: use each lesson's latest run under DIR made with --notebook")
    b.add_argument("--mathjax-url", default=None,
                   help="where pages load MathJax from (default: a CDN); e.g. a copy you host")
    b.add_argument("--timeout", type=positive_float, default=None, help="seconds one notebook cell may run")
    b.set_defaults(func=_cmd_build)


__all__ = ["build_site", "build_course"]
