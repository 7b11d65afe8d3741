"""Segmentation metrics.

Dice is computed here directly (a few tensor ops) because the trainer needs it per class on batched torch
tensors every validation; empty structures are handled on purpose: a class absent from both prediction and
reference gives NaN (undefined, excluded from means), absent from one side only gives 0.

For whole label maps (``learn2synth evaluate``): :func:`dice_score`, :func:`surface_distances` (HD95 and ASSD in
physical units through MONAI), :func:`label_metrics`, :func:`mean_over_labels`, :func:`slice_dice` (per-slice Dice
of a volume), and for summaries and comparisons :func:`summarize` and :func:`paired_comparison` (Wilcoxon
signed-rank, Cohen's d).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Dice of each foreground class (1..n_classes-1) for each item: (B, n_classes - 1), NaN where undefined.

    Parameters
    ----------
    pred, target : (B, 1, *spatial) integer label maps.

    Examples
    --------
    >>> p = torch.tensor([[[[1, 1], [0, 2]]]])
    >>> t = torch.tensor([[[[1, 0], [0, 2]]]])
    >>> dice_per_class(p, t, 4)
    tensor([[0.6667, 1.0000,    nan]])
    """
    dims = tuple(range(1, pred.ndim))
    out = []
    for c in range(1, n_classes):
        p, t = pred == c, target == c
        inter = (p & t).sum(dims).double()
        total = (p.sum(dims) + t.sum(dims)).double()
        out.append(torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.full_like(total, float("nan"))))
    return torch.stack(out, 1).float()


def nanmean(x: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean ignoring NaN (undefined Dice)."""
    return x.nanmean() if dim is None else x.nanmean(dim)


# --- Per-structure metrics of whole label maps (``learn2synth evaluate``) -------------------------------------
#
# Conventions for empty structures, chosen so that no case is silently dropped and no number is invented:
#
# ============================  ==========  =================  =================================================
# structure present in           Dice        HD95, ASSD         in summaries (mean, sd, median)
# ============================  ==========  =================  =================================================
# prediction and reference       computed    computed           included
# neither                        NaN         NaN                excluded (nothing to segment, nothing predicted)
# only one of them               0.0         inf                Dice included; distances excluded but counted
#                                                               in ``n_inf`` (a distance to nothing is unbounded)
# ============================  ==========  =================  =================================================
#
# Distances follow MONAI's surface metrics: the surface of a mask is its voxels that touch the background
# (face connectivity), distances are between voxel centres in physical units (the voxel spacing), HD95 is the
# larger of the two directed 95th percentiles, ASSD the mean of the distances in both directions pooled.


def _as_mask(x) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    return x.astype(bool, copy=False)


def _check_masks(pred, ref, spacing):
    pred, ref = _as_mask(pred), _as_mask(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction has shape {pred.shape} but reference has shape {ref.shape}")
    if spacing is not None:
        spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (pred.ndim,)))
        if not all(s > 0 and np.isfinite(s) for s in spacing):
            raise ValueError(f"spacing must be positive, got {spacing}")
    return pred, ref, spacing


def dice_score(pred, ref) -> float:
    """Dice overlap 2|P∩R| / (|P| + |R|) of two binary masks; NaN when both are empty.

    Examples
    --------
    >>> dice_score([[1, 1], [0, 0]], [[1, 0], [0, 0]])
    0.6666666666666666
    >>> dice_score([0, 0], [0, 0])
    nan
    """
    pred, ref, _ = _check_masks(pred, ref, None)
    total = int(pred.sum()) + int(ref.sum())
    return float("nan") if total == 0 else 2.0 * int((pred & ref).sum()) / total


def surface_distances(pred, ref, spacing=None) -> tuple[float, float]:
    """(HD95, ASSD) of two binary masks, in the units of ``spacing`` (voxels when None).

    Computed with MONAI's ``compute_hausdorff_distance(percentile=95)`` and
    ``compute_average_surface_distance(symmetric=True)``; empty masks follow the table at the top of this
    section (both empty: NaN, one empty: inf).

    Parameters
    ----------
    pred, ref : array-like
        Binary masks of the same 2D or 3D shape.
    spacing : float or sequence of float, optional
        Voxel size along each axis, e.g. ``Volume.spacing``.

    Examples
    --------
    Two one-voxel-thick lines 3 rows apart, with rows 2.5 mm apart:

    >>> a = np.zeros((8, 5), bool); b = a.copy()
    >>> a[2, :] = True; b[5, :] = True
    >>> surface_distances(a, b, spacing=(2.5, 1.0))
    (7.5, 7.5)
    """
    pred, ref, spacing = _check_masks(pred, ref, spacing)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not (has_pred or has_ref):
        return float("nan"), float("nan")
    if not (has_pred and has_ref):
        return float("inf"), float("inf")
    from monai.metrics.utils import get_edge_surface_distance

    # Crop to the union's bounding box plus one voxel (what MONAI does itself) before MONAI converts the whole
    # volume to float: distances do not change, and a 256^3 volume costs a fraction of the memory and time.
    box = tuple(slice(max(i.min() - 1, 0), i.max() + 2) for i in np.nonzero(pred | ref))
    p = torch.from_numpy(np.ascontiguousarray(pred[box]))
    r = torch.from_numpy(np.ascontiguousarray(ref[box]))
    # One call for both directions, then MONAI's own formulas: compute_hausdorff_distance(percentile=95) is the
    # larger directed 95th percentile (torch.quantile), compute_average_surface_distance(symmetric=True) the mean
    # of both directions' distances. Calling those two functions computes the edges and distance transforms
    # twice; this halves evaluate's time on 3D volumes (test_metrics checks the values against them).
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument it passes to itself
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
        _, (d_pred, d_ref), _ = get_edge_surface_distance(p, r, spacing=None if spacing is None else list(spacing),
                                                          symmetric=True)
    hd95 = max(torch.quantile(d.double(), 0.95) for d in (d_pred, d_ref))
    assd = torch.cat([d_pred, d_ref]).double().mean()
    return float(hd95), float(assd)


def label_metrics(pred, ref, labels, spacing=None, distances: bool = True) -> dict[int, dict[str, float]]:
    """Dice, HD95 and ASSD of each label value: ``{label: {"dice": ..., "hd95": ..., "assd": ...}}``.

    Each label is scored over the whole array (a 3D volume as one volume, never slice by slice). With
    ``distances=False`` only Dice is computed (the distances take nearly all the time on 3D volumes).

    Examples
    --------
    >>> pred = np.array([[1, 1, 0], [2, 0, 0]]); ref = np.array([[1, 0, 0], [0, 0, 0]])
    >>> label_metrics(pred, ref, [1, 2])[2]
    {'dice': 0.0, 'hd95': inf, 'assd': inf}
    >>> label_metrics(pred, ref, [1], distances=False)
    {1: {'dice': 0.6666666666666666}}
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    out = {}
    for label in labels:
        p, r = pred == label, ref == label
        out[int(label)] = {"dice": dice_score(p, r)}
        if distances:
            out[int(label)]["hd95"], out[int(label)]["assd"] = surface_distances(p, r, spacing)
    return out


def mean_over_labels(values) -> float:
    """Mean of one case's per-label values, leaving out NaN (a label in neither map); inf if any value is inf.

    A case's mean distance is unbounded when one of its structures is missing from one map, so it then counts
    as inf in summaries (``n_inf``) rather than as the mean of the structures that happen to be there.

    Examples
    --------
    >>> mean_over_labels([0.5, float("nan"), 1.0]), mean_over_labels([2.0, float("inf")])
    (0.75, inf)
    >>> mean_over_labels([float("nan")])
    nan
    """
    values = np.asarray(list(values), dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")


def slice_dice(pred, ref, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Dice of two binary masks in each slice along ``axis``, and the slices that are false positives.

    Returns
    -------
    dice : (n_slices,) float
        Dice in each slice where the reference holds the structure; NaN where it does not.
    false_positive : (n_slices,) bool
        Slices where the prediction holds the structure and the reference does not (their Dice would be 0;
        they are reported apart so that a few stray voxels do not enter an average as a 0).

    Examples
    --------
    >>> ref = np.zeros((3, 2, 2), bool); ref[0] = True; ref[1, 0, 0] = True
    >>> pred = np.zeros((3, 2, 2), bool); pred[0, 0] = True; pred[2, 1, 1] = True
    >>> slice_dice(pred, ref, 0)
    (array([0.66666667, 0.        ,        nan]), array([False, False,  True]))
    """
    pred, ref, _ = _check_masks(pred, ref, None)
    p = np.moveaxis(pred, axis, 0).reshape(pred.shape[axis], -1)
    r = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
    inter, n_pred, n_ref = (p & r).sum(1), p.sum(1), r.sum(1)
    dice = np.full(len(n_ref), np.nan)
    held = n_ref > 0
    dice[held] = 2.0 * inter[held] / (n_pred[held] + n_ref[held])
    return dice, ~held & (n_pred > 0)


def summarize(values) -> dict[str, float]:
    """n, n_inf, mean, sd (n - 1 in the denominator), median of the finite values; NaN and inf are left out.

    Examples
    --------
    >>> summarize([1.0, 2.0, 6.0, float("nan"), float("inf")])
    {'n': 3, 'n_inf': 1, 'mean': 3.0, 'sd': 2.6457513110645907, 'median': 2.0}
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    n = len(finite)
    return {"n": n, "n_inf": int(np.isinf(values).sum()),
            "mean": float(finite.mean()) if n else float("nan"),
            "sd": float(finite.std(ddof=1)) if n > 1 else float("nan"),
            "median": float(np.median(finite)) if n else float("nan")}


def paired_comparison(a, b) -> dict[str, float]:
    """Paired statistics of B - A over the cases where both values are finite.

    Returns n, mean of A and of B, mean difference, Cohen's d for paired samples (mean difference / sd of the
    differences; NaN when every difference is 0, +-inf when they are all equal and not 0), and the two-sided
    Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zero differences dropped; statistic and p NaN when no
    difference is non-zero).

    Examples
    --------
    >>> r = paired_comparison([0.5, 0.6, 0.7, 0.8], [0.6, 0.8, 0.8, 1.0])
    >>> r["n"], round(r["mean_diff"], 3), round(r["cohen_d"], 3), r["p_value"]
    (4, 0.15, 2.598, 0.125)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1D arrays of the same length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    diff = b - a
    n = len(diff)
    out = {"n": n, "mean_a": float(a.mean()) if n else float("nan"), "mean_b": float(b.mean()) if n else float("nan"),
           "mean_diff": float(diff.mean()) if n else float("nan"), "cohen_d": float("nan"),
           "wilcoxon": float("nan"), "p_value": float("nan")}
    if n > 1:
        sd = float(diff.std(ddof=1))
        mean = out["mean_diff"]
        out["cohen_d"] = mean / sd if sd > 0 else (float("nan") if mean == 0 else float(np.copysign(np.inf, mean)))
    if np.any(diff != 0):
        from scipy.stats import wilcoxon

        result = wilcoxon(diff[diff != 0])
        out["wilcoxon"], out["p_value"] = float(result.statistic), float(result.pvalue)
    return out
