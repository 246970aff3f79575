"""`tinytf compare VARIANT [VARIANT ...]`: every variant through the same battery, side by side.

Each row of the battery (`battery.py`) trains one phenomenon's toy per (variant, seed), with
the same seeds and held-out data for every variant; `vanilla` always runs as the reference.
Per row: mean and spread over the seeds of a headline metric, and a verdict against vanilla.

Verdict rule (a screen, not a significance test): with s_v and s_0 the standard deviations
over seeds (ddof=1) of the variant and of vanilla, a variant differs from vanilla when
|mean_v - mean_0| > s_v + s_0; otherwise "no clear difference". One seed gives no verdict.
The verdict prints both means, both spreads and the number of seeds, so that a reader can
judge for themselves. The cost row is timed, not seeded: it reports the ratio to vanilla
of the median forward + backward time and of XLA's temporary memory at each length.

Cache: every (variant, experiment, seed) result is stored as one JSON file under
`$TINYTF_COMPARE_CACHE` (default `~/.cache/tinytf/compare`), named by a hash of the
variant's fingerprint (its configuration and the source file of its functions: editing
the file makes a new entry), the experiment, the seed, the experiment's settings and the
tinytf version. Adding a variant to a comparison therefore runs only the new variant.
The cost row is measured afresh every run. `--no-cache` ignores the cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

from tinytf.apps import battery
from tinytf.apps.battery import BatteryConfig
from tinytf.plots.compare import plot_compare
from tinytf.progress import progress_bar, say
from tinytf.variant_contract import load_variant, variant_fingerprint

REFERENCE = "vanilla"

# row -> (headline metric, word when the variant's value is higher, word when lower, format)
HEADLINES = {
    "sinks": (lambda s: "sink_rate", "more sinks", "fewer sinks", "{:.0%}"),
    "dilution": (lambda s: f"accuracy@{max(s['needle_lengths'])}", "less dilution (accuracy at the longest n)",
                 "more dilution (accuracy at the longest n)", "{:.0%}"),
    "entropy": (lambda s: "loss", "trains worse at a high LR (loss)", "trains better at a high LR (loss)",
                "{:.3g}"),
    "rank": (lambda s: "log10_residual", "slower rank collapse (log10 residual)",
             "faster rank collapse (log10 residual)", "{:.2f}"),
    "induction": (lambda s: "accuracy", "better copying", "worse copying", "{:.0%}"),
    "vit": (lambda s: "accuracy", "higher ViT accuracy", "lower ViT accuracy", "{:.0%}"),
    "detr": (lambda s: "ap50", "higher DETR AP50", "lower DETR AP50", "{:.2f}"),
}


def cache_dir() -> Path:
    """Where results are cached: $TINYTF_COMPARE_CACHE, else ~/.cache/tinytf/compare."""
    return Path(os.environ.get("TINYTF_COMPARE_CACHE") or Path.home() / ".cache" / "tinytf" / "compare")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for package in ("tinytf", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def cache_key(fingerprint: str, experiment: str, seed: int, settings: dict) -> str:
    text = json.dumps([fingerprint, experiment, seed, settings, versions()["tinytf"]], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def summarize(values: list) -> dict:
    """Mean, standard deviation over seeds (ddof=1; None for one seed) and n of the finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "spread": None, "n": 0}
    return {"mean": statistics.fmean(finite), "spread": statistics.stdev(finite) if len(finite) > 1 else None,
            "n": len(finite)}


def verdict(row: str, settings: dict, variant: dict, reference: dict) -> str:
    """The rule of the module docstring, in words: '<finding>: 3% +- 1 vs 24% +- 8 (vanilla), 3 seeds'."""
    _, higher, lower, fmt = HEADLINES[row]
    a, b = variant, reference
    if a["mean"] is None or b["mean"] is None:
        return "no verdict: a run did not finish (non-finite metric)"
    f = lambda s: "?" if s is None else fmt.format(s).rstrip("%")  # noqa: E731
    numbers = (f"{fmt.format(a['mean'])} +- {f(a['spread'])} vs {fmt.format(b['mean'])} +- {f(b['spread'])} "
               f"({REFERENCE}), {min(a['n'], b['n'])} seed{'s' if min(a['n'], b['n']) > 1 else ''}")
    if a["spread"] is None or b["spread"] is None:
        return f"no verdict (one seed): {numbers}"
    if abs(a["mean"] - b["mean"]) <= a["spread"] + b["spread"]:
        return f"no clear difference: {numbers}"
    return f"{higher if a['mean'] > b['mean'] else lower}: {numbers}"


def run_compare(specs: list[str], config: BatteryConfig, *, out: str | Path | None = None, use_cache: bool = True,
                figure: bool = True) -> dict:
    """Run the battery for every variant (vanilla added first if absent); return and write compare.json.

    Every variant is checked against the contract before anything trains.
    """
    specs = [REFERENCE] + [s for s in dict.fromkeys(specs) if s != REFERENCE]
    reports = {s: load_variant(s) for s in specs}  # fails fast, before any training
    fingerprints = {s: variant_fingerprint(s) for s in specs}
    rows = [e for e in config.experiments if e != "cost"]
    cache = cache_dir()
    t0 = time.perf_counter()
    results, hits = {}, 0
    total = len(rows) * len(specs) * len(config.seeds) + ("cost" in config.experiments) * len(specs) * len(
        config.cost_lengths)
    bar = progress_bar(total, desc="compare", unit="run")
    for row in rows:
        settings = config.settings(row)
        results[row] = {"settings": settings, "headline": HEADLINES[row][0](settings), "variants": {}}
        for spec in specs:
            per_seed = {}
            for seed in config.seeds:
                bar.set_postfix_str(f"{row} {spec} seed {seed}")
                path = cache / f"{cache_key(fingerprints[spec], row, seed, settings)}.json"
                if use_cache and path.exists():
                    per_seed[seed] = json.loads(path.read_text())["metrics"]
                    hits += 1
                else:
                    per_seed[seed] = battery.EXPERIMENTS[row](reports[spec].config, seed, settings)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps({"variant": spec, "fingerprint": fingerprints[spec], "experiment": row,
                                                "seed": seed, "settings": settings, "metrics": per_seed[seed]}))
                bar.update()
            metrics = sorted({k for m in per_seed.values() for k in m})
            results[row]["variants"][spec] = {
                "seeds": {str(s): m for s, m in per_seed.items()},
                "summary": {k: summarize([m.get(k) for m in per_seed.values()]) for k in metrics}}
        head = results[row]["headline"]
        ref = results[row]["variants"][REFERENCE]["summary"][head]
        results[row]["verdicts"] = {s: verdict(row, settings, v["summary"][head], ref)
                                    for s, v in results[row]["variants"].items() if s != REFERENCE}
    if "cost" in config.experiments:
        bar.set_postfix_str("cost")
        settings = config.settings("cost")
        measured = battery.cost({s: reports[s].config for s in specs}, settings, progress=bar.update)
        ref = measured[REFERENCE]
        longest = max(config.cost_lengths)
        results["cost"] = {"settings": settings, "load_average": os.getloadavg(), "variants": measured,
                           "ratios": {s: {f"{q}@{T}": m[f"{k}@{T}"] / ref[f"{k}@{T}"]
                                          for T in config.cost_lengths
                                          for q, k in (("time", "median_seconds"), ("memory", "temp_bytes"))}
                                      for s, m in measured.items()}}
        results["cost"]["verdicts"] = {
            s: (f"time x{r[f'time@{longest}']:.2f}, memory x{r[f'memory@{longest}']:.2f} of {REFERENCE} at "
                f"T={longest} (load {os.getloadavg()[0]:.1f} while timing)")
            for s, r in results["cost"]["ratios"].items() if s != REFERENCE}
    bar.close()
    report = {"variants": {s: {"fingerprint": fingerprints[s], "contract": list(reports[s].passed)} for s in specs},
              "reference": REFERENCE, "config": config.as_dict(), "verdict_rule": __doc__.split("\n\n")[2],
              "versions": versions(), "cache": {"dir": str(cache), "hits": hits, "enabled": use_cache},
              "seconds": time.perf_counter() - t0, "rows": results}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(report, indent=1))
        if figure:
            plot_compare(report, out / "compare.png")
    return report


def table(report: dict) -> str:
    """The verdicts as a terminal table: one line per (row, variant)."""
    lines = []
    for row, r in report["rows"].items():
        for spec, text in r["verdicts"].items():
            lines.append(f"{row:<10} {spec:<24} {text}")
    return "\n".join(lines)


def _cli(args) -> int:
    config = BatteryConfig.quick() if args.quick else BatteryConfig.full()
    if args.seeds is not None:
        config = BatteryConfig(**{**config.as_dict(), "seeds": tuple(args.seeds)})
    report = run_compare(args.variants, config, out=args.out, use_cache=not args.no_cache)
    print(table(report))
    if args.out:
        say(f"wrote {Path(args.out) / 'compare.json'} and compare.png ({report['seconds']:.0f} s, "
            f"{report['cache']['hits']} cached runs)")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("compare", help="score attention variants on every phenomenon, side by side",
                       description=__doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[2],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="+", metavar="VARIANT",
                   help="a named variant, module:fn or path/to/file.py:fn (vanilla is always the reference)")
    p.add_argument("--quick", action="store_true",
                   help=f"only the rows {', '.join(battery.QUICK_EXPERIMENTS)}, short (about 3 min for two "
                        f"variants); {battery.QUICK_EXCLUDED_REASON}")
    p.add_argument("--out", default=None, help="folder for compare.json and compare.png")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds (default 0 1 2)")
    p.add_argument("--no-cache", action="store_true", help=f"ignore the result cache ({cache_dir()})")
    p.set_defaults(func=_cli)


__all__ = ["run_compare", "table", "verdict", "summarize", "cache_dir", "cache_key", "HEADLINES", "REFERENCE"]
