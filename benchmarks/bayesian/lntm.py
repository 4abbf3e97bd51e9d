"""LNTM part: `models.bayesian.lntm` (HMC-EM) beside scikit-learn's LatentDirichletAllocation.

Both on 20 Newsgroups (bydate) over the same vocabulary (the 2,000 most frequent
training words, `models.data.newsgroups`) with 20 topics, trained on all 11,314
training messages; scored on the same held-out documents (the first 2,000 test
messages of the loader's fixed order) by the same estimator, document completion:
each document's words are split in two halves by `lntm.completion_split` (same
seed), the document's topic proportions are inferred from the first half (ours:
HMC on eta, posterior mean of the word distribution; scikit-learn: `transform`,
its variational posterior mean of the proportions, times its normalized
`components_`) and the second half's perplexity is reported. scikit-learn runs
with its defaults (batch variational Bayes, 10 passes); its own `perplexity()`
(a variational bound on whole test documents, a different estimator) is given in
the note. No published number uses this vocabulary and protocol.

    python -m benchmarks.bayesian_zoo --parts lntm [--quick]
"""
import time
from pathlib import Path

import numpy as np
import torch

from models.bayesian import lntm
from models.data.newsgroups import load_newsgroups

N_TOPICS, VOCAB_SIZE, SEED = 20, 2000, 0


def sklearn_lda(train, observed, held_out, n_topics, seed):
    """(completion perplexity, sklearn's own test perplexity bound, top-word ids) of LDA."""
    from scipy import sparse
    from sklearn.decomposition import LatentDirichletAllocation
    lda = LatentDirichletAllocation(n_components=n_topics, random_state=seed)
    lda.fit(sparse.csr_matrix(train.numpy()))
    topics = lda.components_ / lda.components_.sum(1, keepdims=True)
    theta = lda.transform(sparse.csr_matrix(observed.numpy()))
    probs = theta @ topics
    perplexity = lntm.completion_perplexity(torch.as_tensor(probs), held_out.double())
    bound = lda.perplexity(sparse.csr_matrix((observed + held_out).numpy()))
    return perplexity, bound, np.argsort(-topics, 1)[:, :10]


def run(quick, root):
    sizes = (["--train-size", "1500", "--test-size", "300", "--epochs", "3",
              "--n-samples", "10"] if quick else
             ["--test-size", "2000", "--epochs", "8", "--e-steps", "2", "--n-samples", "20"])
    out = Path(root) / "runs" / "bayesian_zoo" / "lntm"
    ours = lntm.main(sizes + ["--n-topics", str(N_TOPICS), "--vocab-size", str(VOCAB_SIZE),
                              "--seed", str(SEED), "--out", str(out), "--no-progress"])
    corpus = load_newsgroups(VOCAB_SIZE)
    n_train, n_test = ours["budget"]["n_train_docs"], ours["budget"]["n_test_docs"]
    observed, held_out = lntm.completion_split(corpus.test[:n_test], SEED)
    started = time.process_time()
    peer, bound, peer_top = sklearn_lda(corpus.train[:n_train], observed, held_out, N_TOPICS,
                                        SEED)
    peer_seconds = time.process_time() - started
    budget = ("quick: 3 epochs" if quick else
              "8 epochs of 2 HMC transitions (10 leapfrogs) per document")
    return [{
        "model": "lntm",
        "data": f"20newsgroups bydate ({n_train} train, {len(observed)} held-out docs, "
                f"V={VOCAB_SIZE}, {N_TOPICS} topics)",
        "metric": "test_perplexity", "ours": ours["test_perplexity"], "ours_se": None,
        "published": None, "published_se": None, "published_source": None,
        "peer": "scikit-learn LatentDirichletAllocation", "peer_value": peer, "peer_se": None,
        "ours_seconds": ours["budget"]["cpu_seconds"], "peer_seconds": peer_seconds,
        "note": (f"document-completion perplexity for both (half of each held-out document's "
                 f"words observed, the other half scored); ours: Monte Carlo EM, {budget}, "
                 f"held-out eta by HMC (posterior-mean word distribution over the second "
                 f"half of the transitions); ours' CPU seconds include loading the "
                 f"corpus; scikit-learn defaults (batch VB, 10 passes); its own "
                 f"perplexity() bound on the whole held-out documents: {bound:.1f}"),
        "topics": (out / "topics.txt").read_text().splitlines(),
        "peer_topics": [f"topic {k:2d}: " + " ".join(corpus.vocab[i] for i in row)
                        for k, row in enumerate(peer_top)]}]
