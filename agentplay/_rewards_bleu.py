"""R-Zero's repetition penalty: cluster a batch of proposals by BLEU distance, penalise by cluster share.

R-Zero (Huang et al., 2025) saw its challenger collapse onto near-copies of one
question and added r_rep(x_i) = |C(x_i)| / B: the batch of B questions is clustered
by d_ij = 1 - BLEU(x_i, x_j) and each question pays the share of the batch in its
cluster. BLEU is nltk's (smoothing method 1, as R-Zero); the clustering is SciPy's
average-linkage hierarchy cut at a distance threshold (what R-Zero does with
scikit-learn's AgglomerativeClustering). Agent0's curriculum agent uses the same penalty.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["bleu_cluster_penalty", "bleu_clusters", "bleu_distance"]

_WORDS = re.compile(r"\w+|[^\w\s]")


def _tokens(text: str) -> list[str]:
    # a regex, not nltk.word_tokenize: that needs the punkt data download, which is not offline
    return _WORDS.findall(text.casefold())


def bleu_distance(a: str, b: str) -> float:
    """1 - BLEU between two texts, symmetrised (the mean of both directions); 0 for equal token lists."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    ta, tb = _tokens(a), _tokens(b)
    if ta == tb:
        return 0.0
    if not ta or not tb:
        return 1.0
    smooth = SmoothingFunction().method1
    both = sentence_bleu([tb], ta, smoothing_function=smooth) + sentence_bleu([ta], tb, smoothing_function=smooth)
    return 1.0 - both / 2.0


def bleu_clusters(texts: Sequence[str], threshold: float = 0.5) -> list[int]:
    """A cluster label per text: average linkage over BLEU distances, merged while below `threshold`."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    n = len(texts)
    if n < 2:
        return [0] * n
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            dist[i, j] = dist[j, i] = bleu_distance(texts[i], texts[j])
    tree = linkage(squareform(dist, checks=False), method="average")
    # fcluster keeps clusters whose merge distance is <= t; R-Zero merges while < threshold
    labels = fcluster(tree, t=np.nextafter(threshold, 0.0), criterion="distance")
    return [int(x) - 1 for x in labels]


def bleu_cluster_penalty(texts: Sequence[str], threshold: float = 0.5) -> list[float]:
    """R-Zero's r_rep per text: |C(x_i)| / B, the share of the batch in x_i's BLEU cluster.

    Never below 1/B (a text is in its own cluster), 1 when the whole batch is one cluster.
    """
    labels = bleu_clusters(texts, threshold)
    return [labels.count(label) / len(labels) for label in labels]
