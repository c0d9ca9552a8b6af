"""Retrieval: each test image queries the training split by cosine similarity of frozen features.

Instance-level image retrieval as the SSL literature measures it on class labels (e.g. the
Battle of the Backbones retrieval tasks, arXiv 2310.19909): a training image is relevant to a query
when it shares the query's label. Metrics, in percent:
- `recall@1`, `recall@5`: the share of queries with at least one relevant image among the k most
  similar training images;
- `mAP`: the mean over queries of the average precision of the full ranking of the training split,
  AP = sum over relevant images of the precision at their rank / number of relevant images. Tied
  similarities are ranked together, as scikit-learn's `average_precision_score` does (the precision
  of a tied group is taken at its end), so the number does not depend on an arbitrary tie order.

Nothing is trained and nothing is random: the spread over seeds is 0.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from pretrainlab.eval.average_precision import average_precisions
from pretrainlab.eval.protocols import PROTOCOLS, EvalContext, takes_options
from pretrainlab.eval.record import EvalResult

RECALL_AT = (1, 5)


def retrieval_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                     test_labels: torch.Tensor, recall_at: tuple[int, ...] = RECALL_AT,
                     chunk_elements: int = 2**22) -> dict[str, float]:
    """{"recall@k": %, ..., "mAP": %, "queries_without_match": count} for test queries (M, D) against train (N, D).

    Queries go in chunks of about `chunk_elements` similarities: the full ranking of each is sorted.
    """
    database = F.normalize(train_features.float(), dim=1)
    chunk = max(1, chunk_elements // len(database))
    recall_hits = {k: 0 for k in recall_at}
    precisions = []
    for start in range(0, len(test_features), chunk):
        queries = F.normalize(test_features[start : start + chunk].float(), dim=1)
        similarity = queries @ database.T  # (m, N)
        relevant = test_labels[start : start + chunk, None] == train_labels[None, :]  # (m, N)
        top = similarity.topk(min(max(recall_at), similarity.shape[1]), dim=1).indices  # (m, k_max)
        top_relevant = relevant.gather(1, top)
        for k in recall_at:
            recall_hits[k] += int(top_relevant[:, :k].any(dim=1).sum())
        precisions.append(average_precisions(similarity, relevant))
    precision = torch.cat(precisions)
    scores = {f"recall@{k}": recall_hits[k] / len(test_features) * 100 for k in recall_at}
    scores["mAP"] = float(precision.nanmean()) * 100
    scores["queries_without_match"] = int(precision.isnan().sum())
    return scores


@PROTOCOLS.register("retrieval")
@takes_options()
def retrieval_protocol(context: EvalContext) -> list[EvalResult]:
    started = time.perf_counter()
    scores = retrieval_scores(context.features("train"), context.labels("train"), context.features("test"),
                              context.labels("test"))
    settings = {**context.base_settings(), "similarity": "cosine", "database": "train split",
                "queries": "test split", "relevant": "same label", "ties": "ranked together (scikit-learn AP)",
                "queries_without_match": scores.pop("queries_without_match"), "deterministic": True}
    seconds = time.perf_counter() - started
    return [EvalResult("retrieval", context.source.spec, metric, value, seconds, settings=settings,
                       backbone=context.target.label) for metric, value in scores.items()]
