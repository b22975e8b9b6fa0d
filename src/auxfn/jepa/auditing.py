"""Theorem 1, measured: does a trained model collapse non-bisimilar observations?

:func:`audit` renders ``n_render`` fresh observations of every state (nuisance drawn
from a seed the training never used), encodes them and compares the latents with the
largest bisimulation of the MDP (``auxfn.jepa.bisim``):

1. premise: mean and max per-sample L_dyn and L_p (the theorem needs both ≈ 0 everywhere);
2. collapsed pairs: for classes C_i ≠ C_j, ``d_min(i, j) = min ||E(x) − E(y)||`` over
   x ∈ C_i, y ∈ C_j, divided by a scale s; a pair with ``d_min / s < tau`` is collapsed
   (the theorem predicts none). ``s`` is the RMS latent norm (``scale="rms"``, default)
   or the median pairwise distance (``"median"``); see :func:`latent_audit`;
3. clusters (:func:`count_clusters`): the average-linkage dendrogram of the per-render
   latents, split wherever two groups are further apart (mean cross distance) than
   ``cluster_kappa`` (2) times the mean distance inside the more spread-out of them; a
   cluster counts when it holds at least ``n_render`` renders (half of one state's audit
   renders), smaller groups are stray points; at least 1. ``n_clusters_centroids`` counts
   the groups of class centroids under a cut at 0.5 × the median pairwise distance of
   the renders (the coarser global rule, for comparison), and the older
   k-means/silhouette count is kept as ``n_clusters_silhouette``. Also the
   number of classes left separated (components of the class graph whose edges are the
   collapsed pairs);
4. healthy-collapse index: mean intra-class spread / mean inter-centroid distance;
5. nearest-centroid accuracy on held-out renders (centroids from one set of renders,
   accuracy on another: not the in-sample number of the reference code);
6. ridge linear probes on frozen latents (train/test split) for the state, the class
   and each nuisance factor, with their chance levels;
7. RankMe ``exp(H(σ / Σσ))`` of the centred latents and the mean per-dimension std;
8. minimum inter-class distance against distinguishing depth, with the lower bound of
   the notes' §2.4: with pointwise errors ε_T, ε_p, Lipschitz constants L (of T in z)
   and L_P, and auxiliary gap δ, a pair first told apart at depth n satisfies
   ``||E(o) − E(o')|| ≥ [(δ − 2ε_p)/L_P − 2ε_T (L^n − 1)/(L − 1)] / L^n``.
   L and L_P are estimated as the largest difference quotients over the audit latents
   (a lower estimate of the true constants, so the bound is indicative, not certified).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auxfn.jepa.bisim import Bisimulation, empirical_bisimulation, largest_bisimulation
from auxfn.jepa.envs import TabularMDP, make_aux_fn, transition_table

__all__ = ["AuditReport", "adjusted_rand_index", "audit", "audit_figures", "cluster_labels", "count_clusters", "count_clusters_silhouette", "latent_audit", "rankme", "ridge_probe", "silhouette",
           "tsne_available", "tsne_embedding"]


def rankme(z: np.ndarray, eps: float = 1e-12) -> float:
    """RankMe (Garrido et al. 2023): ``exp(−Σ_k q_k log q_k)``, ``q = σ / Σσ`` of centred z (N, d)."""
    z = np.asarray(z, dtype=np.float64)
    sv = np.linalg.svd(z - z.mean(0), compute_uv=False)
    if sv.sum() <= eps:
        return 0.0
    q = sv / sv.sum() + eps
    return float(np.exp(-(q * np.log(q)).sum()))


def ridge_probe(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, y_test: np.ndarray, lam: float = 1e-3) -> float:
    """Test accuracy of a closed-form ridge classifier (one-hot targets, standardised z, bias)."""
    mu, sd = z_train.mean(0), z_train.std(0) + 1e-8
    a = np.c_[(z_train - mu) / sd, np.ones(len(z_train))]
    b = np.c_[(z_test - mu) / sd, np.ones(len(z_test))]
    classes = np.unique(y_train)
    onehot = (y_train[:, None] == classes[None, :]).astype(np.float64)
    w = np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ onehot)
    return float(np.mean(classes[np.argmax(b @ w, axis=1)] == y_test))


def _pairwise(z: np.ndarray) -> np.ndarray:
    sq = (z**2).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0))


def silhouette(z: np.ndarray, labels: np.ndarray, dist: np.ndarray | None = None) -> float:
    """Mean silhouette ``(b − a) / max(a, b)`` (Rousseeuw 1987); 0 for singletons."""
    dist = _pairwise(z) if dist is None else dist
    ks = np.unique(labels)
    if len(ks) < 2:
        return 0.0
    member = labels[:, None] == ks[None, :]
    sums = dist @ member
    counts = member.sum(0)
    own = member.argmax(1)
    n_own = counts[own]
    a = np.where(n_own > 1, sums[np.arange(len(z)), own] / np.maximum(n_own - 1, 1), 0.0)
    other = np.where(member, np.inf, sums / counts[None, :])
    b = other.min(1)
    s = np.where(n_own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def count_clusters(z: np.ndarray, *, kappa: float = 2.0, min_size: int = 2) -> int:
    """The number of clusters of :func:`cluster_labels` (at least 1)."""
    return max(1, int(cluster_labels(z, kappa=kappa, min_size=min_size).max()) + 1)


def cluster_labels(z: np.ndarray, *, kappa: float = 2.0, min_size: int = 2) -> np.ndarray:
    """Clusters in z (N, d) as a person reading a scatter plot would count them.

    Build the average-linkage (UPGMA) dendrogram of z: the height of the merge of groups
    A and B is h(A, B), the mean distance between a member of A and a member of B. With
    w(X) the mean pairwise distance inside X, a merge is a *visible split* when

        h(A, B) > kappa · max(w(A), w(B)),

    i.e. the groups are further apart than ``kappa`` times their own spread. The clusters
    are the maximal groups with no visible split anywhere inside them (so a tight cluster
    counts even when the coarser groups above it are not clearly apart). Groups with fewer than ``min_size`` points are stray points and are not
    counted; the result is at least 1. ``min_size`` should be large enough for a group's
    spread to be estimated (the audit uses half the renders of one state, 16 by default:
    with 2-point groups, sampling noise alone makes splits look visible). For two Gaussian clouds of RMS radius r in many
    dimensions, ``kappa = 2`` splits them when their centres are more than about
    sqrt(6) r = 2.45 r apart.

    A rule that cuts the dendrogram at one global height (say 0.5 × the median pairwise
    distance) merges neighbours of evenly spaced clusters on a line, because the median
    distance grows with the number of clusters; this rule compares each gap with the
    spread of the groups it separates. It is invariant to translation, rotation and
    scaling of z.
    """
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"z must have shape (N, d), got {z.shape}")
    if kappa <= 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    if min_size < 2:  # a single point has no spread, so every split between singletons would look visible
        raise ValueError(f"min_size must be >= 2, got {min_size}")
    n = len(z)
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    d = pdist(z)
    if d.max() <= 0:
        return np.zeros(n, dtype=np.int64)
    link = linkage(d, "average")
    size = np.ones(2 * n - 1, dtype=np.int64)
    within_sum = np.zeros(2 * n - 1)  # sum of pairwise distances inside each node
    for i, (a, b, h, m) in enumerate(link):
        a, b = int(a), int(b)
        size[n + i] = int(m)
        within_sum[n + i] = within_sum[a] + within_sum[b] + h * size[a] * size[b]  # UPGMA: h = mean cross distance
    pairs = np.maximum(size * (size - 1) / 2, 1)
    w = within_sum / pairs

    # split[x]: some merge inside x (x included) between two groups of >= min_size points is visible
    split = np.zeros(2 * n - 1, dtype=bool)
    for i, (a, b, h, _) in enumerate(link):
        a, b = int(a), int(b)
        visible = size[a] >= min_size and size[b] >= min_size and h > kappa * max(w[a], w[b])
        split[n + i] = split[a] or split[b] or visible

    # the clusters are the maximal groups of >= min_size points with no visible split inside
    labels = np.full(n, -1, dtype=np.int64)
    stack, total = [2 * n - 2], 0
    while stack:
        x = stack.pop()
        if size[x] < min_size:
            continue  # stray points keep the label -1
        if not split[x]:
            labels[_leaves(link, x, n)] = total
            total += 1
        else:
            stack += [int(link[x - n, 0]), int(link[x - n, 1])]
    if total == 0:
        labels[:] = 0
    return labels


def _leaves(link: np.ndarray, node: int, n: int) -> list[int]:
    out, stack = [], [node]
    while stack:
        x = stack.pop()
        if x < n:
            out.append(x)
        else:
            stack += [int(link[x - n, 0]), int(link[x - n, 1])]
    return out


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings of the same N points."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"labelings must be 1-D of the same length, got {a.shape} and {b.shape}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    comb = lambda x: (x * (x - 1) / 2).sum()  # noqa: E731
    total, rows, cols = comb(np.array([len(a)], dtype=float)), comb(table.sum(1)), comb(table.sum(0))
    expected = rows * cols / total if total > 0 else 0.0
    max_index = (rows + cols) / 2
    if max_index == expected:
        return 1.0
    return float((comb(table) - expected) / (max_index - expected))


def _global_cut_count(z: np.ndarray, height: float) -> int:
    """Groups of an average-linkage dendrogram cut at one height."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(z) < 2:
        return 1
    return int(fcluster(linkage(np.asarray(z, dtype=np.float64), "average"), height, "distance").max())


def count_clusters_silhouette(z: np.ndarray, k_max: int, *, seed: int = 0, collapsed_below: float = 0.0) -> int:
    """Clusters in z (N, d): the k in 2..k_max whose k-means (scipy kmeans2, k-means++,
    best of 3 restarts by inertia) has the best mean silhouette; 1 when that silhouette
    is below 0.25 (Kaufman & Rousseeuw's "no substantial structure") or when the
    diameter of the cloud is at most ``collapsed_below``."""
    from scipy.cluster.vq import kmeans2

    z = np.asarray(z, dtype=np.float64)
    dist = _pairwise(z)
    if dist.max() <= collapsed_below or len(z) < 3:
        return 1
    best_k, best_s = 1, -np.inf
    for k in range(2, min(k_max, len(z) - 1) + 1):
        runs = []
        for r in range(3):
            with warnings.catch_warnings():  # an empty cluster only means this k is too large
                warnings.simplefilter("ignore")
                cent, lab = kmeans2(z, k, minit="++", seed=seed + 97 * r + k)
            runs.append((((z - cent[lab]) ** 2).sum(), lab))
        lab = min(runs, key=lambda x: x[0])[1]
        s = silhouette(z, lab, dist)
        if s > best_s:
            best_k, best_s = k, s
    return int(best_k) if best_s >= 0.25 else 1


def latent_audit(z: np.ndarray, states: np.ndarray, bisim: Bisimulation, *, tau: float = 1e-2, scale: str = "rms", n_worst: int = 5, seed: int = 0, cluster_kappa: float = 2.0, cluster_min_size: int | None = None) -> dict[str, Any]:
    """Collapse statistics of latents ``z (N, d)`` of renders of ``states (N,)``.

    Returns the class-level d_min matrix (normalised), the collapsed pairs, clusters,
    separated classes and the healthy-collapse index (see the module docstring).
    ``scale="rms"``: s = sqrt(mean ||z||²), which also exposes collapse to a single
    point (the median distance of a collapsed cloud is its own noise level);
    ``scale="median"``: s = median pairwise distance, invariant to a common offset.
    """
    from scipy.sparse.csgraph import connected_components

    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) != len(states):
        raise ValueError(f"z must have shape (N={len(states)}, d), got {z.shape}")
    if scale not in ("rms", "median"):
        raise ValueError(f"scale must be 'rms' or 'median', got {scale!r}")
    cls = bisim.classes[states]
    k = bisim.n_classes
    dist = _pairwise(z)
    iu = np.triu_indices(len(z), 1)
    s = float(np.sqrt((z**2).sum(1).mean())) if scale == "rms" else float(np.median(dist[iu]))
    s = max(s, 1e-30)
    dmin = np.full((k, k), np.inf)
    for i in range(k):
        for j in range(i + 1, k):
            d = dist[np.ix_(cls == i, cls == j)]
            if d.size:
                dmin[i, j] = dmin[j, i] = d.min() / s
    depth = bisim.class_depth()
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k) if np.isfinite(dmin[i, j])]
    collapsed = [(i, j) for i, j in pairs if dmin[i, j] < tau]
    worst = sorted(pairs, key=lambda ij: dmin[ij])[:n_worst]
    # the same count with the other scale, so the two can be compared: a cloud that shrank
    # relative to its offset is "collapsed" under rms but may still carry the classes
    s_other = float(np.median(dist[iu])) if scale == "rms" else float(np.sqrt((z**2).sum(1).mean()))
    n_collapsed_other = sum(dmin[p] * s < tau * max(s_other, 1e-30) for p in pairs)
    adj = dmin < tau
    n_sep = connected_components(adj, directed=False)[0] if k else 0
    centroids = np.stack([z[cls == c].mean(0) for c in range(k)])
    per_state = np.bincount(states).max() if len(states) else 1
    min_size = max(2, per_state // 2) if cluster_min_size is None else cluster_min_size
    median = float(np.median(dist[iu])) if len(iu[0]) else 0.0
    labels = cluster_labels(z, kappa=cluster_kappa, min_size=min_size)
    n_clusters = max(1, int(labels.max()) + 1)
    kept = labels >= 0  # agreement of the clusters with the bisimulation classes, stray points left out
    cluster_ari = adjusted_rand_index(labels[kept], cls[kept]) if kept.sum() > 1 else float("nan")
    n_clusters_centroids = _global_cut_count(centroids, 0.5 * median) if median > 0 else 1
    # k up to min(2 |B*|, 12): the secondary count is kept cheap (k-means for every k up to 44 on
    # GridWorld took most of the audit's time)
    n_clusters_sil = count_clusters_silhouette(z, min(max(2, 2 * k), 12), seed=seed, collapsed_below=tau * s)
    spread = np.mean([np.sqrt(((z[cls == c] - centroids[c]) ** 2).sum(1)).mean() for c in range(k)])
    inter = _pairwise(centroids)[np.triu_indices(k, 1)].mean() if k > 1 else np.nan
    return {
        "scale": s,
        "n_noneq_pairs": len(pairs),
        "n_collapsed_pairs": len(collapsed),
        f"n_collapsed_pairs_{'median' if scale == 'rms' else 'rms'}_scale": int(n_collapsed_other),
        "min_ratio": float(min((dmin[p] for p in pairs), default=np.inf)),
        "worst_pairs": [{"classes": [int(i), int(j)], "ratio": float(dmin[i, j]), "depth": int(depth[i, j])} for i, j in worst],
        "n_separated_classes": int(n_sep),
        "n_clusters": int(n_clusters),
        "n_clusters_centroids": int(n_clusters_centroids),
        "cluster_class_ari": float(cluster_ari),
        "cluster_stray_fraction": float(1 - kept.mean()),
        "n_clusters_silhouette": int(n_clusters_sil),
        "cluster_rule": {"linkage": "average", "kappa": cluster_kappa, "min_size": int(min_size)},
        "healthy_collapse_index": float(spread / inter) if inter and inter > 0 else float("inf"),
        "distance_vs_depth": [[int(depth[i, j]), float(dmin[i, j])] for i, j in pairs],
    }


@dataclass
class AuditReport:
    """What :func:`audit` measured; ``to_dict()`` gives JSON primitives, ``markdown()`` a table."""

    n_states: int
    n_classes: int
    premise: dict[str, float]
    collapse: dict[str, Any]
    centroid_acc_heldout: float
    probes: dict[str, float]
    chance: dict[str, float]
    rankme: float
    per_dim_std: float
    empirical: dict[str, Any] | None = None
    depth_bound: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    latents: dict[str, np.ndarray] | None = field(default=None, repr=False)
    """z (2 n_states n_render, d), states, classes of the audit renders (not serialised)."""

    @property
    def n_collapsed_pairs(self) -> int:
        return int(self.collapse["n_collapsed_pairs"])

    @property
    def n_clusters(self) -> int:
        return int(self.collapse["n_clusters"])

    @property
    def n_separated_classes(self) -> int:
        return int(self.collapse["n_separated_classes"])

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "latents"}
        return json.loads(json.dumps(d, default=float))

    def headline(self) -> dict[str, Any]:
        return {
            "bisimulation classes": self.n_classes,
            "classes separated": self.n_separated_classes,
            "latent clusters": self.n_clusters,
            **({"clusters vs classes (adjusted Rand index)": round(self.collapse["cluster_class_ari"], 3),
                "clusters of class centroids / silhouette k": f"{self.collapse['n_clusters_centroids']} / {self.collapse['n_clusters_silhouette']}"} if "n_clusters_centroids" in self.collapse else {}),
            "collapsed non-equivalent pairs": f"{self.n_collapsed_pairs} / {self.collapse['n_noneq_pairs']}",
            **{f"collapsed pairs ({k.split('_')[3]} scale)": v for k, v in self.collapse.items() if k.startswith("n_collapsed_pairs_")},
            "min d_min/s": round(self.collapse["min_ratio"], 4),
            "held-out centroid accuracy": round(self.centroid_acc_heldout, 3),
            "healthy-collapse index": round(self.collapse["healthy_collapse_index"], 4),
            "RankMe": round(self.rankme, 2),
            "L_dyn mean / max": f"{self.premise['dyn_mean']:.3g} / {self.premise['dyn_max']:.3g}",
            "L_p mean / max": f"{self.premise['aux_mean']:.3g} / {self.premise['aux_max']:.3g}",
            **{f"probe {k}": f"{v:.3f} (chance {self.chance[k]:.3f})" for k, v in self.probes.items()},
        }

    def details_markdown(self) -> str:
        """The closest non-equivalent class pairs and the empirical-bisimulation check."""
        rows = []
        worst = self.collapse["worst_pairs"]
        if worst:
            rows += ["Closest non-equivalent class pairs:", "", "| classes | d_min / s | depth |", "|---|---|---|"]
            rows += [f"| {w['classes'][0]}, {w['classes'][1]} | {w['ratio']:.4g} | {w['depth']} |" for w in worst]
        if self.depth_bound is not None:
            b = self.depth_bound
            rows += ["", f"Depth bound (notes §2.4): L_T = {b['lip_T']:.3g}, L_P = {b['lip_P']:.3g}, ε_T = {b['eps_T']:.3g}, "
                     f"ε_p = {b['eps_p']:.3g}, δ = {b['delta']:.3g}.", "", "| depth | lower bound | measured min distance |", "|---|---|---|"]
            rows += [f"| {r['depth']} | {r['bound']:.3g} | {r['observed_min']:.3g} |" for r in b["rows"]]
        if self.empirical is not None:
            e = self.empirical
            rows += ["", f"Against the empirical bisimulation of the observed transitions: {e['n_collapsed_state_pairs']} of "
                     f"{e['n_noneq_state_pairs']} non-equivalent state pairs collapsed."]
        return "\n".join(rows)

    def markdown(self) -> str:
        rows = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in self.headline().items()]
        return "\n".join(rows) + "\n\n" + self.details_markdown()


def _core(env: Any) -> TabularMDP:
    core = getattr(getattr(env, "unwrapped", env), "core", env)
    for attr in ("n_states", "n_actions", "step", "aux", "render"):
        if not hasattr(core, attr):
            raise TypeError(f"env must be a TabularEnv, a TabularMDP or a user tabular core (missing {attr!r}), got {type(env).__name__}")
    if not isinstance(core, TabularMDP):  # a user's plain object: defaults for the optional methods
        from auxfn.jepa.user_mdp import as_tabular_mdp

        core = as_tabular_mdp(core)
    return core


@torch.no_grad()
def _encode(model, obs: np.ndarray, batch: int = 512) -> np.ndarray:
    device = next(model.parameters()).device
    out = [model.encoder(torch.as_tensor(obs[i : i + batch], device=device)).cpu().numpy() for i in range(0, len(obs), batch)]
    return np.concatenate(out).astype(np.float64)


def audit(model, env: Any, n_render: int = 16, *, seed: int = 0, aux: str = "reward", train_aux: str | None = None, random_dim: int = 16, random_seed: int = 0, tau: float = 1e-2, scale: str = "rms", transitions: np.ndarray | None = None) -> AuditReport:
    """Audit a trained :class:`~auxfn.jepa.models.JEPAModel` on a finite deterministic MDP.

    ``env``: a gymnasium env made by auxfn (``env.unwrapped.core``) or a TabularMDP.
    ``aux``: the auxiliary function whose largest bisimulation is the ground truth.
    ``train_aux``: the auxiliary target the model was trained on (for the premise
    check of L_p; default ``aux``). ``transitions``: observed (s, a, s') rows, to also
    audit against the empirical bisimulation. Raises ``ValueError`` if the MDP's step
    is not deterministic (the theorem assumes it).
    """
    if n_render < 2:
        raise ValueError(f"n_render must be >= 2 (one set fits centroids and probes, another tests them), got {n_render}")
    core = _core(env)
    table = transition_table(core, check=True)
    bis = largest_bisimulation(table, core.aux(np.arange(core.n_states), aux))
    rng = np.random.default_rng(10_000_019 + seed)  # a seed stream the training never uses
    n = core.n_states
    states = np.repeat(np.arange(n), n_render)
    # two independent render sets: A fits centroids and probes, B tests them
    sets = []
    for _ in range(2):
        nuis = core.sample_nuisance(rng, len(states))
        obs = core.render(states, nuis)
        sets.append((nuis, obs, _encode(model, obs)))
    (nuis_a, obs_a, z_a), (nuis_b, obs_b, z_b) = sets

    # 1. premise: per-sample losses for every (render, action) of set B
    from auxfn.jepa.losses import per_sample_losses

    aux_fn = make_aux_fn(core, train_aux or aux, random_dim, random_seed)
    dyn_all, aux_all = [], []
    device = next(model.parameters()).device
    for a in range(core.n_actions):
        acts = np.full(len(states), a)
        s_next = table[states, a]
        obs_next = core.render(s_next, core.next_nuisance(nuis_b, states, s_next, rng))
        p = aux_fn(states, obs_b)
        if p.shape[1] != model.aux_dim:
            raise ValueError(f"the aux target {train_aux or aux!r} has dimension {p.shape[1]} but the model's head predicts {model.aux_dim}; pass train_aux=")
        with torch.no_grad():
            t = per_sample_losses(
                model, torch.as_tensor(obs_b, device=device), torch.as_tensor(acts, device=device),
                torch.as_tensor(obs_next, device=device), torch.as_tensor(p, dtype=torch.float32, device=device),
            )
        dyn_all.append(t["dyn"].cpu().numpy())
        aux_all.append(t["aux"].cpu().numpy())
    dyn_all, aux_all = np.concatenate(dyn_all), np.concatenate(aux_all)
    premise = {"dyn_mean": float(dyn_all.mean()), "dyn_max": float(dyn_all.max()), "aux_mean": float(aux_all.mean()), "aux_max": float(aux_all.max())}

    z_all = np.concatenate([z_a, z_b])
    s_all = np.concatenate([states, states])
    collapse = latent_audit(z_all, s_all, bis, tau=tau, scale=scale, seed=seed)
    depth_bound = None
    if (train_aux or aux) == aux:  # the bound needs P to regress the same p that defines B*
        depth_bound = _depth_bound(model, z_b, core.n_actions, core.aux(np.arange(n), aux), dyn_all.max(), aux_all.max(), collapse)

    cls_a, cls_b = bis.classes[states], bis.classes[states]
    centroids = np.stack([z_a[cls_a == c].mean(0) for c in range(bis.n_classes)])
    pred = np.argmin(((z_b[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    centroid_acc = float(np.mean(pred == cls_b))

    labels = {"state": (states, states), "class": (cls_a, cls_b)}
    fa, fb = core.nuisance_factors(nuis_a), core.nuisance_factors(nuis_b)
    labels.update({f"nuisance:{k}": (fa[k], fb[k]) for k in fa})
    probes, chance = {}, {}
    for name, (ya, yb) in labels.items():
        if len(np.unique(ya)) < 2:
            continue
        probes[name] = ridge_probe(z_a, ya, z_b, yb)
        chance[name] = float(np.max(np.bincount(yb)) / len(yb))

    empirical = None
    if transitions is not None:
        emp = empirical_bisimulation(transitions, core.aux(np.arange(n), aux), n_states=n)
        d = _pairwise(z_all) / collapse["scale"]
        state_dmin = np.full((n, n), np.inf)
        for i in range(n):
            for j in range(i + 1, n):
                state_dmin[i, j] = d[np.ix_(s_all == i, s_all == j)].min()
        noneq = np.triu(~emp.equivalent, 1)
        empirical = {
            "n_noneq_state_pairs": int(noneq.sum()),
            "n_collapsed_state_pairs": int((noneq & (state_dmin < tau)).sum()),
            "is_equivalence": emp.is_equivalence,
        }

    return AuditReport(
        n_states=n, n_classes=bis.n_classes, premise=premise, collapse=collapse,
        centroid_acc_heldout=centroid_acc, probes=probes, chance=chance, rankme=rankme(z_all),
        per_dim_std=float(z_all.std(0).mean()), empirical=empirical, depth_bound=depth_bound,
        settings={"n_render": n_render, "seed": seed, "aux": aux, "tau": tau, "scale": scale},
        latents={"z": z_all, "states": s_all, "classes": bis.classes[s_all]},
    )


@torch.no_grad()
def _max_quotient(f_z: np.ndarray, z: np.ndarray) -> float:
    dz, df = _pairwise(z), _pairwise(f_z)
    ok = dz > 1e-9 * max(dz.max(), 1e-30)
    return float((df[ok] / dz[ok]).max()) if ok.any() else float("nan")


@torch.no_grad()
def _depth_bound(model, z: np.ndarray, n_actions: int, p_states: np.ndarray, dyn_max: float, aux_max: float, collapse: dict[str, Any]) -> dict[str, Any]:
    """The §2.4 lower bound on d_min per distinguishing depth, next to the measured d_min."""
    device = next(model.parameters()).device
    zt = torch.as_tensor(z, dtype=torch.float32, device=device)
    lip_t = max(_max_quotient(model.transition(zt, torch.full((len(z),), a, device=device)).cpu().double().numpy(), z) for a in range(n_actions))
    lip_p = _max_quotient(model.predict_aux(zt).cpu().double().numpy(), z)
    eps_t = float(np.sqrt(dyn_max * z.shape[1]))
    eps_p = float(np.sqrt(aux_max * model.aux_dim)) if model.aux_loss == "mse" else float("nan")
    gaps = _pairwise(np.asarray(p_states, dtype=np.float64))
    delta = float(gaps[gaps > 1e-12].min()) if (gaps > 1e-12).any() else float("nan")
    rows = []
    s = collapse["scale"]
    dv = np.array(collapse["distance_vs_depth"], dtype=float).reshape(-1, 2)
    for depth in sorted({int(d) for d in dv[:, 0]}):
        geo = depth if abs(lip_t - 1) < 1e-12 else (lip_t**depth - 1) / (lip_t - 1)
        bound = ((delta - 2 * eps_p) / lip_p - 2 * eps_t * geo) / lip_t**depth
        observed = float(dv[dv[:, 0] == depth, 1].min()) * s
        rows.append({"depth": depth, "bound": float(bound), "observed_min": observed, "holds": bool(observed >= bound)})
    return {"lip_T": lip_t, "lip_P": lip_p, "eps_T": eps_t, "eps_p": eps_p, "delta": delta, "scale": s, "rows": rows}


def tsne_available() -> bool:
    """True when scikit-learn (the optional ``analysis`` extra) can be imported."""
    try:
        from sklearn.manifold import TSNE  # noqa: F401
    except ImportError:
        return False
    return True


def tsne_embedding(z: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray | None:
    """2-D t-SNE (scikit-learn) of z (N, d), or None when scikit-learn is not installed.

    The perplexity is capped at (N - 1) / 3 (scikit-learn needs it below N); PCA
    initialisation and a fixed seed make the picture reproducible.
    """
    if not tsne_available():
        return None
    from sklearn.manifold import TSNE

    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or len(z) < 5:
        raise ValueError(f"t-SNE needs z of shape (N >= 5, d), got {z.shape}")
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(z) - 1) / 3), init="pca", random_state=seed)
    try:  # one OpenMP thread: on a busy 2-core machine the default thread pool made it 20x slower
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return tsne.fit_transform(z)
    with threadpool_limits(1):
        return tsne.fit_transform(z)


def audit_figures(report: AuditReport, out_dir: str | Path, prefix: str = "") -> list[Path]:
    """PCA (and t-SNE when scikit-learn is installed) of the audit latents coloured by
    class, and d_min / s against distinguishing depth."""
    from auxfn.core.plotting import COLORS, save_figure, subplots

    if report.latents is None:
        raise ValueError("the report holds no latents (it was read back from JSON); run audit() again")
    z, cls = report.latents["z"], report.latents["classes"]
    zc = z - z.mean(0)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    pc = zc @ vt[:2].T if vt.shape[0] >= 2 else np.c_[zc @ vt[:1].T, np.zeros(len(z))]
    cmap = __import__("matplotlib").colormaps["tab10" if report.n_classes <= 10 else "viridis"]
    k = max(report.n_classes - 1, 1)

    def class_scatter(xy, name: str, label: str, what: str):
        fig, ax = subplots(width=4.6, height=3.8)
        for c in range(report.n_classes):
            m = cls == c
            colour = cmap(c) if report.n_classes <= 10 else cmap(c / k)
            ax.scatter(xy[m, 0], xy[m, 1], s=8, color=colour, label=str(c) if report.n_classes <= 10 else None)
        ax.set(xlabel=f"{label} 1", ylabel=f"{label} 2", title=f"{what} by bisimulation class ({report.n_clusters} clusters)")
        if report.n_classes <= 10:
            ax.legend(fontsize=7, markerscale=1.5, ncol=2)
        return save_figure(fig, out_dir, f"{prefix}{name}")

    paths = [class_scatter(pc, "pca", "PC", "latents")]
    emb = tsne_embedding(z, seed=report.settings.get("seed", 0))
    if emb is not None:
        paths.append(class_scatter(emb, "tsne", "t-SNE", "t-SNE of latents"))
    dv = np.array(report.collapse["distance_vs_depth"], dtype=float).reshape(-1, 2)
    fig, ax = subplots()
    ax.scatter(dv[:, 0], np.maximum(dv[:, 1], 1e-6), s=14, color=COLORS[0])
    ax.axhline(report.settings["tau"], color=COLORS[1], ls="--", label="collapse threshold τ")
    if report.depth_bound is not None:
        rows = [r for r in report.depth_bound["rows"] if r["bound"] > 0]
        if rows:
            ax.plot([r["depth"] for r in rows], [r["bound"] / report.depth_bound["scale"] for r in rows], "v", color=COLORS[2], label="§2.4 lower bound")
    ax.set(xlabel="distinguishing depth", ylabel="min inter-class distance / s", yscale="log", title="distance vs depth")
    ax.legend()
    paths.append(save_figure(fig, out_dir, f"{prefix}distance_vs_depth"))
    return paths
