"""Empirical spectral density (ESD) metrics of weight matrices, for AlphaPruning-style allocation.

Heavy-Tailed Self-Regularization (Martin & Mahoney, "Implicit Self-Regularization in Deep Neural
Networks", JMLR 2021; Martin, Peng & Mahoney, Nature Communications 2021) fits a power law
``p(lambda) ~ lambda^-alpha`` to the tail of the eigenvalues of ``W^T W``. AlphaPruning (Lu et al.,
NeurIPS 2024) allocates sparsity from the fitted ``alpha`` of each layer.

Own fast estimator (``alpha_peak``, ``alpha_mid``), following AlphaPruning's ``net_esd_estimator``:

* eigenvalues ``lambda = svdvals(W)^2`` in fp32 (``torch.linalg.svdvals``, QR-based ``gesvd`` driver
  on CUDA), matrices of equal shape batched together, on CUDA when available; singular values at or
  below fp32 resolution (``sigma <= sigma_max * eps_fp32``, i.e. exact zeros and rounding noise of
  rank-deficient matrices) are dropped to avoid ``log(0)``. The published code keeps every
  eigenvalue; the stricter numerical-rank tolerance (``x max(m, n)``) would drop genuine small
  eigenvalues of trained weights (seen on MiniLM) and move the histogram peak, so it is not used;
* the continuous power-law MLE (Hill estimator, Clauset, Shalizi & Newman, SIAM Review 2009) for a
  tail starting at ``xmin = lambda_i``: ``alpha = 1 + n / sum_{j>=i} log(lambda_j / lambda_i)`` with
  ``n = N - i``; the fitting math runs in float64;
* ``alpha_mid``: ``xmin`` is the middle eigenvalue (``i = N // 2``);
* ``alpha_peak``: ``xmin`` is searched among the eigenvalues up to ``1.5 x`` the peak of the histogram
  (100 bins) of ``log10(lambda)``, picking the one whose fit has the smallest Kolmogorov-Smirnov
  distance ``D = max_j |1 - (lambda_j / xmin)^(1 - alpha) - (j - i) / n|``, exactly as AlphaPruning's
  ``xmin_peak`` option and weightwatcher's ``fix_fingers='xmin_peak'`` do. Note that both compare the
  eigenvalues against a *lower* bound of ``log10(0.95 * peak)`` (a log value against linear values), so
  in practice the search starts at the smallest eigenvalue; this is kept for fidelity with the
  published per-layer files.

Other metrics (``alpha``, ``entropy``, ``stable_rank``, ...) are computed by ``weightwatcher``
(optional extra ``hf_prune[esd]``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from hf_prune.arch import get_arch, iter_block_linears

__all__ = [
    "ESTIMATOR_METRICS",
    "KNOWN_METRICS",
    "WEIGHTWATCHER_METRICS",
    "compute_esd_metrics",
    "esd_cache_path",
    "esd_eigenvalues",
    "esd_layers",
    "load_metric_file",
    "powerlaw_alpha",
]

logger = logging.getLogger(__name__)

ESTIMATOR_METRICS = ("alpha_peak", "alpha_mid")
WEIGHTWATCHER_METRICS = (
    "alpha",
    "alpha_weighted",
    "entropy",
    "log_alpha_norm",
    "log_norm",
    "log_spectral_norm",
    "mp_softrank",
    "spectral_norm",
    "stable_rank",
)
KNOWN_METRICS = ESTIMATOR_METRICS + WEIGHTWATCHER_METRICS

# AlphaPruning scales Conv2d kernels by sqrt(conv_norm) before the SVD of each kernel position.
_CONV_NORM = 0.5
_HIST_BINS = 100
# Candidate rows of the KS matrix evaluated at once; bounds the fit's memory to CHUNK * N float64.
_KS_CHUNK = 256
# Largest stack of equal-shape matrices sent to one batched svdvals call.
_SVD_BATCH_BYTES = 1 << 28


def _is_esd_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, Conv1D, nn.Conv2d))


def esd_layers(model_or_module: nn.Module) -> list[tuple[str, nn.Module]]:
    """Return the ``(name, module)`` pairs whose weights the ESD metrics describe, in module order.

    For a ``PreTrainedModel`` of a supported architecture these are the prunable projections inside
    the transformer blocks (:func:`hf_prune.arch.iter_block_linears`, the order of the published
    AlphaPruning files); for anything else, every ``nn.Linear``, transformers ``Conv1D`` and
    ``nn.Conv2d``.

    Args:
        model_or_module: A model or any module.

    Returns:
        The ordered list of named layers.

    Raises:
        TypeError: If ``model_or_module`` is not an ``nn.Module``.
    """
    if not isinstance(model_or_module, nn.Module):
        raise TypeError(f"model_or_module must be a torch nn.Module, got {type(model_or_module).__name__}.")
    if isinstance(model_or_module, PreTrainedModel):
        try:
            get_arch(model_or_module)
        except ValueError:
            pass  # unsupported family: fall back to every linear/conv layer below
        else:
            return [(ref.name, ref.module) for ref in iter_block_linears(model_or_module)]
    return [(name, m) for name, m in model_or_module.named_modules() if _is_esd_layer(m)]


def _matrices(module: nn.Module) -> torch.Tensor:
    """The fp32 matrices whose squared singular values form the layer's ESD, as ``[B, m, n]``."""
    w = module.weight.detach()
    if isinstance(module, nn.Conv2d):
        # One [out, in] matrix per kernel position, as AlphaPruning / weightwatcher treat conv layers.
        w = torch.flatten(w, start_dim=2) * math.sqrt(_CONV_NORM)
        return w.permute(2, 0, 1).float()
    # Conv1D stores [in, out]; the non-zero spectrum of W^T W and W W^T is the same, no transpose needed.
    return w.float().unsqueeze(0)


def esd_eigenvalues(
    modules: Sequence[nn.Module], device: str | torch.device | None = None
) -> list[torch.Tensor]:
    """Eigenvalues of ``W^T W`` (squared singular values) of each module, batched by shape.

    Args:
        modules: Layers with a ``weight`` (Linear, Conv1D, Conv2d).
        device: Where to run the SVDs; default CUDA if available, else CPU.

    Returns:
        One ascending float64 CPU tensor per module, numerically-zero eigenvalues removed.
    """
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    mats = [_matrices(m) for m in modules]
    out: list[torch.Tensor | None] = [None] * len(mats)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, m in enumerate(mats):
        # Key on the full [B, m, n] shape: a Conv2d contributes one matrix per kernel position.
        groups.setdefault(tuple(m.shape), []).append(i)
    eps = torch.finfo(torch.float32).eps
    for shape, idxs in groups.items():
        step = max(1, _SVD_BATCH_BYTES // max(math.prod(shape) * 4, 1))
        for start in range(0, len(idxs), step):
            chunk = idxs[start : start + step]
            stack = torch.cat([mats[i] for i in chunk]).to(dev)
            # On CUDA the default driver (Jacobi, gesvdj) returned eigenvalues with ~1e-3 relative error on
            # 4096-wide fp32 matrices (measured on an H100), enough to move alpha; QR-based gesvd matches
            # LAPACK's accuracy (~1e-7 median) at similar speed.
            driver = "gesvd" if stack.is_cuda else None
            sv = torch.linalg.svdvals(stack, driver=driver).reshape(len(chunk), -1).cpu().double()
            tol = sv.amax(dim=1) * eps
            for j, i in enumerate(chunk):
                s = sv[j].flatten()
                s = s[s > tol[j]]
                out[i] = torch.sort(s * s).values
    return [t for t in out if t is not None]


def _ks_distances(
    eigs: torch.Tensor, log_eigs: torch.Tensor, cand: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hill alpha and KS distance of the power-law fit starting at each candidate index."""
    n_all = eigs.numel()
    suffix = torch.flip(torch.cumsum(torch.flip(log_eigs, [0]), 0), [0])
    n = (n_all - cand).double()
    alphas = 1.0 + n / (suffix[cand] - n * log_eigs[cand])
    ds = torch.full_like(alphas, math.inf)
    j = torch.arange(n_all, device=eigs.device)
    for s in range(0, cand.numel(), _KS_CHUNK):
        c = cand[s : s + _KS_CHUNK]
        a = alphas[s : s + _KS_CHUNK]
        first = int(c.min())
        cols = j[first:]
        ratio = eigs[first:].unsqueeze(0) / eigs[c].unsqueeze(1)
        seq = (cols.unsqueeze(0) - c.unsqueeze(1)).double()
        theo = 1.0 - ratio.pow(1.0 - a.unsqueeze(1))
        dev = (theo - seq / n[s : s + _KS_CHUNK].unsqueeze(1)).abs()
        dev = torch.where(seq >= 0, dev, torch.zeros_like(dev))
        ds[s : s + _KS_CHUNK] = dev.amax(dim=1)
    # A fit with alpha <= 1 (or a degenerate inf/NaN) is not a power law: never pick it.
    bad = ~torch.isfinite(alphas) | (alphas <= 1.0)
    ds[bad] = math.inf
    return alphas, ds


def powerlaw_alpha(eigenvalues: torch.Tensor | np.ndarray, xmin: str = "peak") -> float:
    """Power-law exponent of an ESD tail (continuous Hill MLE; AlphaPruning's ``net_esd_estimator``).

    Args:
        eigenvalues: Positive eigenvalues of ``W^T W`` (any order).
        xmin: Tail start rule: ``"peak"`` (KS-optimal ``xmin`` up to 1.5x the log-histogram peak,
            AlphaPruning's ``xmin_peak``), ``"mid"`` (the middle eigenvalue, ``xmin_mid``) or ``"ks"``
            (KS-optimal over all eigenvalues: weightwatcher's default ``alpha``).

    Returns:
        ``alpha``, or ``nan`` when fewer than 2 eigenvalues are given.

    Raises:
        ValueError: For an unknown ``xmin`` rule or non-positive eigenvalues.
    """
    if xmin not in ("peak", "mid", "ks"):
        raise ValueError(f"xmin must be 'peak', 'mid' or 'ks', got {xmin!r}.")
    eigs = torch.as_tensor(eigenvalues).double().flatten()
    if eigs.numel() < 2:
        return math.nan
    if not torch.isfinite(eigs).all() or (eigs <= 0).any():
        raise ValueError("eigenvalues must be positive and finite (drop numerically-zero ones first).")
    eigs = torch.sort(eigs).values
    log_eigs = torch.log(eigs)
    n_all = eigs.numel()
    if xmin == "mid":
        i = n_all // 2
        n = n_all - i
        return float(1.0 + n / (log_eigs[i:].sum() - n * log_eigs[i]))
    last = torch.arange(n_all - 1, device=eigs.device)  # the largest eigenvalue cannot start a tail
    if xmin == "peak":
        h = torch.log10(eigs)
        lo, hi = h.min(), h.max()
        counts = torch.histc(h, bins=_HIST_BINS, min=float(lo), max=float(hi))
        edges = torch.linspace(float(lo), float(hi), _HIST_BINS + 1, dtype=torch.float64, device=eigs.device)
        peak = 10 ** edges[torch.argmax(counts)]
        # The published lower bound is log10(0.95 * peak): kept as is (see the module docstring).
        keep = (eigs[:-1] >= torch.log10(0.95 * peak)) & (eigs[:-1] <= 1.5 * peak)
        cand = last[keep] if keep.any() else last
    else:
        cand = last
    alphas, ds = _ks_distances(eigs, log_eigs, cand)
    if not torch.isfinite(ds).any():
        return math.nan
    return float(alphas[torch.argmin(ds)])


def _sanitize(part: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", part.replace("/", "--"))
    return safe.lstrip(".") or "_"


def esd_cache_path(
    model_id: str,
    metric: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Where :func:`compute_esd_metrics` caches a metric: ``<cache>/esd/<model_id>@<revision>/<metric>.json``.

    Args:
        model_id: Hub id or local name of the model (``/`` becomes ``--``; other unsafe characters ``_``).
        metric: Metric name.
        revision: Model revision (default ``"main"``).
        cache_dir: Cache root; default ``$HF_PRUNE_CACHE`` or ``~/.cache/hf_prune``.

    Returns:
        The JSON file path (not created).
    """
    root = Path(cache_dir) if cache_dir is not None else None
    if root is None:
        env = os.environ.get("HF_PRUNE_CACHE")
        root = Path(env) if env else Path.home() / ".cache" / "hf_prune"
    folder = f"{_sanitize(model_id)}@{_sanitize(revision or 'main')}"
    return root / "esd" / folder / f"{_sanitize(metric)}.json"


def _read_cache(path: Path, names: list[str]) -> list[float] | None:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("names") != names or len(data.get("values", [])) != len(names):
        logger.warning("ESD cache %s does not match this model's layers; recomputing.", path)
        return None
    return [float(v) for v in data["values"]]


def _write_cache(
    path: Path, metric: str, model_id: str, revision: str | None, names: list[str], values: list[float]
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": 1,
        "metric": metric,
        "model_id": model_id,
        "revision": revision or "main",
        "names": names,
        "values": values,
    }
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def _estimator(modules: Sequence[nn.Module], metric: str, device: str | torch.device | None) -> list[float]:
    rule = "peak" if metric == "alpha_peak" else "mid"
    return [powerlaw_alpha(e, rule) if e.numel() >= 2 else math.nan for e in esd_eigenvalues(modules, device)]


def _ww_view(module: nn.Module) -> nn.Module:
    if isinstance(module, Conv1D):
        # weightwatcher knows nn.Linear; present the [out, in] view of the same storage.
        shell = nn.Linear(module.weight.shape[0], module.weight.shape[1], bias=False, device="meta")
        shell.weight = nn.Parameter(module.weight.detach().t(), requires_grad=False)
        return shell
    return module


def _weightwatcher(modules: Sequence[nn.Module], metric: str) -> list[float]:
    ww_logger = logging.getLogger("weightwatcher")
    level = ww_logger.level
    # weightwatcher logs its SVD backend on import and every fit at WARNING/INFO: keep callers' logs clean.
    ww_logger.setLevel(logging.ERROR)
    try:
        try:
            # Optional dependency (extra "esd"): imported only when a weightwatcher metric is asked for.
            with contextlib.redirect_stdout(io.StringIO()):
                import weightwatcher as ww
        except ImportError:
            raise ImportError(
                f"ESD metric {metric!r} is computed with weightwatcher, which is not installed: "
                "pip install 'hf_prune[esd]' (or use metric='alpha_peak' / 'alpha_mid', built in)."
            ) from None
        box = nn.ModuleList([_ww_view(m) for m in modules])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas deprecation noise from inside weightwatcher
            details = ww.WeightWatcher(model=box).analyze(mp_fit=metric == "mp_softrank", max_evals=50_000)
    finally:
        ww_logger.setLevel(level)
    values = [math.nan] * len(modules)
    for name, value in zip(details["name"], details[metric], strict=True):
        idx = int(str(name).split(".")[0])
        values[idx] = float(value)
    return values


def compute_esd_metrics(
    model_or_module: nn.Module,
    metric: str = "alpha_peak",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Compute one ESD metric for every prunable layer, in module order.

    Args:
        model_or_module: A ``PreTrainedModel`` (its block projections are used when the architecture is
            supported) or any module (every Linear / Conv1D / Conv2d).
        metric: ``"alpha_peak"`` (AlphaPruning's default) or ``"alpha_mid"`` (built-in estimator), or a
            weightwatcher metric: ``"alpha"``, ``"alpha_weighted"``, ``"entropy"``, ``"log_alpha_norm"``,
            ``"log_norm"``, ``"log_spectral_norm"``, ``"mp_softrank"``, ``"spectral_norm"``,
            ``"stable_rank"``.
        cache_dir: Cache root (default ``$HF_PRUNE_CACHE`` or ``~/.cache/hf_prune``); used only together
            with ``model_id``.
        model_id: Identifies the weights for caching (``esd/<model_id>@<revision>/<metric>.json``); the
            cache is reused when its layer names match the model's.
        revision: Model revision for the cache key (default ``"main"``).
        device: Device for the built-in estimator's SVDs (default CUDA if available).

    Returns:
        ``{layer name: value}`` in module order; ``nan`` where a fit is impossible (fewer than two
        non-zero eigenvalues).

    Raises:
        ValueError: For an unknown metric name or a model without such layers.
        ImportError: For a weightwatcher metric when weightwatcher is not installed.
    """
    if metric not in KNOWN_METRICS:
        raise ValueError(
            f"Unknown ESD metric {metric!r}. Known: built-in {', '.join(ESTIMATOR_METRICS)}; "
            "via weightwatcher "
            f"{', '.join(WEIGHTWATCHER_METRICS)}."
        )
    layers = esd_layers(model_or_module)
    if not layers:
        raise ValueError(
            f"{type(model_or_module).__name__} has no nn.Linear / Conv1D / nn.Conv2d layers to analyze."
        )
    names = [n for n, _ in layers]
    path = esd_cache_path(model_id, metric, revision=revision, cache_dir=cache_dir) if model_id else None
    if path is not None and path.is_file():
        cached = _read_cache(path, names)
        if cached is not None:
            return dict(zip(names, cached, strict=True))
    modules = [m for _, m in layers]
    if metric in ESTIMATOR_METRICS:
        values = _estimator(modules, metric, device)
    else:
        values = _weightwatcher(modules, metric)
    if path is not None:
        _write_cache(path, metric, str(model_id), revision, names, values)
    return dict(zip(names, values, strict=True))


def load_metric_file(
    path: str | os.PathLike[str], expected_names_or_count: Sequence[str] | int
) -> np.ndarray:
    """Load per-layer metric values from a ``.npy`` (published AlphaPruning format) or ``.json`` file.

    Args:
        path: ``.npy`` with one value per prunable layer in module order, or ``.json`` holding either
            this library's cache format (``{"names": [...], "values": [...]}``), a ``{name: value}``
            mapping, or a plain list of values.
        expected_names_or_count: The model's prunable layer names (JSON mappings are then re-ordered by
            name), or just their number.

    Returns:
        ``float64`` array with one value per expected layer.

    Raises:
        ValueError: On an unsupported suffix, a wrong layer count (the message names both counts),
            names missing from a JSON mapping, or malformed content.
        FileNotFoundError: If ``path`` does not exist.
    """
    p = Path(path)
    if isinstance(expected_names_or_count, (int, np.integer)) and not isinstance(
        expected_names_or_count, bool
    ):
        expected_names: list[str] | None = None
        expected = int(expected_names_or_count)
    elif isinstance(expected_names_or_count, Sequence) and not isinstance(expected_names_or_count, str):
        expected_names = [str(n) for n in expected_names_or_count]
        expected = len(expected_names)
    else:
        raise TypeError(
            "expected_names_or_count must be the list of layer names or their count, got "
            f"{type(expected_names_or_count).__name__}."
        )
    if not p.is_file():
        raise FileNotFoundError(f"Metric file not found: {p}")
    suffix = p.suffix.lower()
    mapping: dict[str, float] | None = None
    if suffix == ".npy":
        values = np.load(p, allow_pickle=False)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
    elif suffix == ".json":
        with p.open(encoding="utf-8") as fh:
            data = json.load(fh)
        if isinstance(data, dict) and "values" in data:
            vals = data["values"]
            keys = data.get("names")
            if keys is not None:
                if len(keys) != len(vals):
                    raise ValueError(f"{p}: 'names' has {len(keys)} entries but 'values' has {len(vals)}.")
                mapping = {str(k): float(v) for k, v in zip(keys, vals, strict=True)}
            values = np.asarray(vals, dtype=np.float64)
        elif isinstance(data, dict):
            mapping = {str(k): float(v) for k, v in data.items()}
            values = np.asarray(list(mapping.values()), dtype=np.float64)
        elif isinstance(data, list):
            values = np.asarray(data, dtype=np.float64)
        else:
            raise ValueError(f"{p}: expected a JSON object or list of numbers, got {type(data).__name__}.")
    else:
        raise ValueError(
            f"Unsupported metric file {p}: expected a .npy or .json file, got suffix {suffix!r}."
        )
    if values.size != expected:
        raise ValueError(
            f"Metric file {p} has {values.size} values but the model has {expected} prunable layers; "
            "the file "
            "must hold one value per prunable layer in module order (was it computed for another model?)."
        )
    if mapping is not None and expected_names is not None and set(mapping) != set(expected_names):
        missing = [n for n in expected_names if n not in mapping]
        if missing:
            raise ValueError(
                f"Metric file {p} lacks {len(missing)} of the model's layers, e.g. {missing[:3]}; its names "
                "must match the model's module names."
            )
    if mapping is not None and expected_names is not None:
        values = np.asarray([mapping[n] for n in expected_names], dtype=np.float64)
    return values
