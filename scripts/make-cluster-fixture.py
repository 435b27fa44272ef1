"""Writes spec/fixtures/cluster-metrics.json: scikit-learn's clustering scores for fixed
label/prediction arrays, the reference for eval/cluster-metrics.ts (spec/eval-cluster.spec.ts).

Run from the repository root:  /usr/bin/python3 scripts/make-cluster-fixture.py

NMI: sklearn.metrics.normalized_mutual_info_score (average_method 'arithmetic', the default).
ARI: sklearn.metrics.adjusted_rand_score.
ACC: best one-to-one cluster -> class matching, scipy.optimize.linear_sum_assignment on the
contingency table (maximize=True), matched count / N.
The arrays are stored in the JSON, so the spec does not depend on numpy's random streams.
"""
import json
import os

import numpy as np
import sklearn
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix


def acc(y_true, y_pred):
    c = contingency_matrix(y_true, y_pred)  # [classes, clusters]
    rows, cols = linear_sum_assignment(c, maximize=True)
    return float(c[rows, cols].sum()) / len(y_true)


rng = np.random.default_rng(0)
cases = {
    "identical": ([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2]),
    "renamed clusters": ([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 9, 9]),
    "one error": ([0, 0, 0, 1, 1, 1, 2, 2, 2], [0, 0, 1, 1, 1, 1, 2, 2, 2]),
    "all in one cluster": ([0, 0, 1, 1, 2, 2], [7, 7, 7, 7, 7, 7]),
    "all singletons": ([0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5]),
    "both single cluster": ([3, 3, 3, 3], [1, 1, 1, 1]),
    "negative and sparse ids": ([-1, -1, 10, 10, 10, 4, 4], [2, 0, 0, 0, 100, 100, -5]),
    "more clusters than classes": (rng.integers(0, 4, 60).tolist(), rng.integers(0, 7, 60).tolist()),
    "fewer clusters than classes": (rng.integers(0, 8, 80).tolist(), rng.integers(0, 3, 80).tolist()),
}
# A noisy clustering of 10 classes into 12 clusters, closer to a real k-means result.
y = rng.integers(0, 10, 1000)
pred = np.where(rng.random(1000) < 0.7, (y * 7 + 3) % 12, rng.integers(0, 12, 1000))
cases["noisy 10 classes 12 clusters"] = (y.tolist(), pred.tolist())
cases["independent random"] = (rng.integers(0, 5, 400).tolist(), rng.integers(0, 5, 400).tolist())

out = {
    "generator": f"scripts/make-cluster-fixture.py (scikit-learn {sklearn.__version__})",
    "cases": [
        {
            "name": name,
            "labels_true": t,
            "labels_pred": p,
            "nmi": float(normalized_mutual_info_score(t, p)),
            "ari": float(adjusted_rand_score(t, p)),
            "acc": acc(t, p),
        }
        for name, (t, p) in cases.items()
    ],
}
path = os.path.join("spec", "fixtures", "cluster-metrics.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
for c in out["cases"]:
    print(f'{c["name"]:32s} nmi {c["nmi"]:.6f} ari {c["ari"]:.6f} acc {c["acc"]:.6f}')
