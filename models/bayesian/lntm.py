"""A logistic-normal topic model by Monte Carlo EM (ZhuSuan's `lntm_mcem`).

    python -m models.bayesian.lntm                       # 20 Newsgroups, 20 topics
    python -m models.bayesian.lntm --n-topics 50 --vocab-size 5000

The model, for documents d with word counts x[d] [V] and K topics:

    phi[k]  ~ Dirichlet(1 + smoothing)               topic k's word distribution [V]
    eta[d]  ~ N(eta_mean, exp(eta_logstd)^2)         document-topic logits [K]
    x[d]    ~ UnnormalizedMultinomial(log(softmax(eta[d]) @ phi))

Monte Carlo EM: the E-step moves every document's eta by `inference.HMC` (one chain
per document, persistent across epochs, step sizes adapted all along towards
acceptance 0.6, as ZhuSuan's example does, since every M-step changes the target;
dual averaging's t0 = 10, Stan's, settles in a few transitions where HMC's default 100
would take tens); the M-step sets the topics to their closed-form EM update given the
E-step's samples (`m_step`: expected word-topic counts plus the smoothing,
normalized), and eta's prior mean and log-std to the samples' mean and log-std over
documents, as ZhuSuan does. ZhuSuan's example puts a N(0, e^20) prior on
unnormalized topics and takes Adam steps on them; that prior is flat to float
precision, and the closed-form step here maximizes the same expected log joint
(under the small Dirichlet smoothing) without a learning rate.

Held-out perplexity by document completion (Wallach et al. 2009): each test
document's words are split at random into two halves (`completion_split`); eta is
sampled by HMC given the first half, with the topics fixed, and the second half is
scored under the posterior-mean word distribution: perplexity =
exp(-sum log p(held-out words) / number of held-out words) (`completion_perplexity`).
Top words of each topic go to `--out`/topics.txt.

Python use:

    model = LNTM(n_topics=20, vocab=corpus.vocab).fit(corpus.train)     # counts [n, V]
    model.top_words(10)                    # [n_topics] lists of words
    model.word_probabilities(counts)       # p(word | document) [n, V], topics fixed
    model.perplexity(corpus.test)          # document-completion perplexity
"""
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import inference
import ppl
from models import zoo
from models.data.newsgroups import load_newsgroups

__all__ = ["lntm", "LNTM", "topic_statistics", "m_step", "prior_update", "completion_split",
           "completion_perplexity", "check_counts", "main"]


def _e_step_log_joint(bn):
    """log p(eta[d]) + log p(x[d] | eta[d], phi) per chain and document: the E-step's target."""
    return bn.cond_log_prob("eta") + bn.cond_log_prob("x")


@ppl.meta_bayesian_net(scope="lntm", log_joint=_e_step_log_joint)
def lntm(n_chains, n_docs, n_topics, n_vocab, eta_mean, eta_logstd, smoothing=0.01):
    """The LNTM over `n_docs` documents, `n_chains` chains (eta: [n_chains, n_docs, K])."""
    bn = ppl.BayesianNet()
    alpha = torch.full((n_topics, n_vocab), 1. + smoothing)
    phi = bn.dirichlet("phi", alpha, group_ndims=1)
    eta = bn.normal("eta", eta_mean.expand(n_chains, n_docs, n_topics),
                    logstd=eta_logstd.expand(n_chains, n_docs, n_topics), group_ndims=1)
    doc_word = torch.softmax(eta, -1) @ phi
    bn.unnormalized_multinomial("x", torch.log(doc_word), normalize_logits=False)
    return bn


def topic_statistics(x, theta, phi):
    """Expected word-topic counts [K, V]: sum_d x[d, w] theta[d, k] phi[k, w] / (theta phi)[d, w].

    x [n, V] counts; theta [..., n, K] topic proportions (leading sample axes are
    averaged over); phi [K, V]. The E-step of the inner EM over each word's topic.
    """
    ratio = x / (theta @ phi).clamp_min(1e-30)
    stats = phi * (theta.transpose(-1, -2) @ ratio)
    return stats.reshape(-1, *phi.shape).mean(0)


def m_step(statistics, smoothing):
    """Topics maximizing sum stats[k, w] log phi[k, w] + log Dirichlet(phi_k; 1 + smoothing)."""
    unnormalized = statistics + smoothing
    return unnormalized / unnormalized.sum(-1, keepdim=True)


def prior_update(eta):
    """eta's prior (mean [K], log-std [K]) fitted to samples eta [..., n, K] (ZhuSuan's)."""
    flat = eta.reshape(-1, eta.shape[-1])
    return flat.mean(0), torch.log(flat.std(0, unbiased=False) + 1e-6)


def check_counts(x, n_vocab, name="x"):
    """`x` as a float32 tensor [n_docs, n_vocab] of non-negative integer counts."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() != 2:
        raise ValueError(f"LNTM: `{name}` must be word counts [n_docs, n_vocab], got shape "
                         f"{tuple(x.shape)}")
    if x.shape[1] != n_vocab:
        raise ValueError(f"LNTM: `{name}` has {x.shape[1]} word columns, but the vocabulary "
                         f"has {n_vocab} words (word ids outside the vocabulary?)")
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()) or bool((x != x.round()).any()):
        raise ValueError(f"LNTM: `{name}` must hold non-negative integer counts")
    return x


def completion_split(x, seed=0):
    """(observed, held_out) halves of counts x [n, V]: each word occurrence to either, p = 1/2.

    Only documents with at least one word in each half are kept.
    """
    generator = torch.Generator().manual_seed(seed)
    observed = torch.binomial(x, torch.full_like(x, 0.5), generator=generator)
    held_out = x - observed
    keep = (observed.sum(1) > 0) & (held_out.sum(1) > 0)
    return observed[keep], held_out[keep]


def completion_perplexity(word_probabilities, held_out):
    """exp(-sum held_out * log p / sum held_out) for p(word | document) [n, V]."""
    log_lik = (held_out * torch.log(word_probabilities.clamp_min(1e-30))).sum()
    return float(torch.exp(-log_lik / held_out.sum()))


class LNTM:
    """The logistic-normal topic model with `n_topics` topics over `vocab` (a list of words).

    `fit(x)` runs Monte Carlo EM on counts x [n_docs, len(vocab)]; then `phi` [K, V]
    holds the topics and `eta_mean`, `eta_logstd` [K] the document-topic prior.
    """

    def __init__(self, n_topics, vocab, *, smoothing=0.01, n_leapfrogs=10, batch_size=2000,
                 seed=0):
        self.n_topics, self.vocab = n_topics, list(vocab)
        self.smoothing, self.n_leapfrogs = smoothing, n_leapfrogs
        self.batch_size, self.seed = batch_size, seed
        self.phi, self.train_perplexity, self.acceptance = None, float("nan"), float("nan")
        self.eta_mean = torch.zeros(n_topics)
        self.eta_logstd = torch.zeros(n_topics)

    def _model(self, n_docs):
        return lntm(1, n_docs, self.n_topics, len(self.vocab), self.eta_mean, self.eta_logstd,
                    self.smoothing)

    def _sampler(self):
        return inference.HMC(step_size=0.1, n_leapfrogs=self.n_leapfrogs, adapt_step_size=True,
                             target_acceptance_rate=0.6, t0=10)

    def _steps(self, sampler, x, eta, n_steps):
        """`n_steps` HMC transitions of the chains eta [1, n, K] given x [n, V] (eta is
        updated in place); yields (step, theta [1, n, K], mean acceptance) after each."""
        model = self._model(len(x))
        observed = {"x": x, "phi": self.phi}
        for step in range(n_steps):
            _, info = sampler.sample(model, observed, {"eta": eta})
            yield step, torch.softmax(eta, -1), float(info.acceptance_rate.mean())

    def _batches(self, n):
        return [slice(start, start + self.batch_size) for start in range(0, n, self.batch_size)]

    def fit(self, x, epochs=30, e_steps=3, progress=True):
        """Monte Carlo EM on counts `x` [n_docs, V]: `epochs` of (E-step: `e_steps` HMC
        transitions per document; M-step: topics and eta's prior). Returns self."""
        x = check_counts(x, len(self.vocab))
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        n_docs = len(x)
        picks = torch.randint(n_docs, (self.n_topics, max(1, n_docs // 100)), generator=generator)
        self.phi = m_step(x[picks].sum(1) + 1., self.smoothing)
        eta = torch.zeros(1, n_docs, self.n_topics)
        batches = self._batches(n_docs)
        samplers = [self._sampler() for _ in batches]  # each keeps its documents' step sizes
        bar = tqdm(range(epochs), desc="LNTM (Monte Carlo EM)", disable=not progress,
                   leave=False)
        for epoch in bar:
            stats, accepted = torch.zeros_like(self.phi), []
            for rows, sampler in zip(batches, samplers):
                for _, theta, acceptance in self._steps(sampler, x[rows], eta[:, rows],
                                                        e_steps):
                    stats += topic_statistics(x[rows], theta, self.phi) / e_steps
                    accepted.append(acceptance)
            self.train_perplexity = completion_perplexity(torch.softmax(eta[0], -1) @ self.phi,
                                                          x)
            self.phi = m_step(stats, self.smoothing)
            self.eta_mean, self.eta_logstd = prior_update(eta)
            self.acceptance = float(np.mean(accepted))
            bar.set_postfix(perplexity=f"{self.train_perplexity:.0f}",
                            acc=f"{self.acceptance:.2f}")
        return self

    def word_probabilities(self, x, n_iters=40, progress=False):
        """p(word | document) [n, V] for counts x: the mean of softmax(eta) @ phi over HMC
        samples of eta given x (topics and prior fixed; the first half of `n_iters`
        adapts the step sizes and is not kept)."""
        if self.phi is None:
            raise RuntimeError("LNTM: call fit() first")
        x = check_counts(x, len(self.vocab))
        eta = self.eta_mean.expand(1, len(x), self.n_topics).clone()
        total = torch.zeros(len(x), len(self.vocab))
        burn_in = n_iters // 2
        batches = self._batches(len(x))
        bar = tqdm(total=n_iters * len(batches), desc="LNTM (held-out eta)",
                   disable=not progress, leave=False)
        for rows in batches:
            sampler = self._sampler()
            for step, theta, _ in self._steps(sampler, x[rows], eta[:, rows], n_iters):
                sampler.adapt_step_size = step + 1 < burn_in
                if step >= burn_in:
                    total[rows] += (theta[0] @ self.phi) / (n_iters - burn_in)
                bar.update()
        bar.close()
        return total

    def perplexity(self, x, n_iters=40, seed=0, progress=False):
        """Document-completion perplexity of counts x (see the module docstring)."""
        observed, held_out = completion_split(check_counts(x, len(self.vocab)), seed)
        return completion_perplexity(self.word_probabilities(observed, n_iters, progress),
                                     held_out)

    def top_words(self, n=10):
        """The `n` most probable words of each topic: [n_topics] lists of words."""
        if self.phi is None:
            raise RuntimeError("LNTM: call fit() first")
        return [[self.vocab[i] for i in row] for row in torch.topk(self.phi, n).indices.tolist()]


def main(argv=None):
    parser = zoo.parser("bayesian.lntm", __doc__.split("\n")[0], data="20newsgroups",
                        epochs=30, quick_epochs=2, n_samples=40)
    parser.add_argument("--n-topics", type=zoo.positive_int, default=20)
    parser.add_argument("--vocab-size", type=zoo.positive_int, default=2000)
    parser.add_argument("--e-steps", type=zoo.positive_int, default=3,
                        help="HMC transitions per document per epoch")
    parser.add_argument("--n-leapfrogs", type=zoo.positive_int, default=10)
    args = parser.parse_args(argv)
    zoo.start(args)
    budget = zoo.Budget()
    corpus = load_newsgroups(args.vocab_size,
                             path=None if args.data == "20newsgroups" else args.data)
    train = zoo.first(corpus.train, args.train_size)
    test = zoo.first(corpus.test, args.test_size)
    model = LNTM(args.n_topics, corpus.vocab, n_leapfrogs=args.n_leapfrogs, seed=args.seed)
    model.fit(train, epochs=args.epochs, e_steps=args.e_steps, progress=not args.no_progress)
    perplexity = model.perplexity(test, n_iters=args.n_samples, seed=args.seed,
                                  progress=not args.no_progress)
    topics = model.top_words(10)
    lines = [f"topic {k:2d}: {' '.join(words)}" for k, words in enumerate(topics)]
    (Path(args.out) / "topics.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"test perplexity (document completion) {perplexity:.1f}; train "
          f"{model.train_perplexity:.1f}")
    return zoo.write_metrics(args.out, {"test_perplexity": perplexity,
                                        "train_perplexity": model.train_perplexity,
                                        "acceptance": model.acceptance},
                             budget.as_dict(args.epochs, n_topics=args.n_topics,
                                            vocab_size=args.vocab_size,
                                            n_train_docs=len(train), n_test_docs=len(test)))


if __name__ == "__main__":
    main()
