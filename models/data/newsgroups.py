"""20 Newsgroups ("bydate": 11,314 train, 7,532 test messages) as bags of words.

    data = load_newsgroups(vocab_size=2000)
    data.train            # float32 tensor [11314, 2000]: word counts per document
    data.vocab[:5]        # the words of the columns, most frequent first

Read straight from `20news-bydate.tar.gz`. Each message loses its header (all
before the first blank line); the rest is lower-cased and split into words of
3-20 letters (`[a-z]{3,20}`); the stop words below and words of fewer than 3
letters are dropped. The vocabulary is the `vocab_size` words most frequent
over the training messages (ties broken alphabetically); test messages are
counted over the same vocabulary. Documents come in a fixed random order (seed 0,
the same every call), so that the first N of either split mix all the groups.
"""
import re
import tarfile
from collections import Counter, namedtuple

import numpy as np
import torch

from models.data.paths import dataset_dir

__all__ = ["Corpus", "load_newsgroups", "bag_of_words", "tokenize", "STOP_WORDS"]

ARCHIVE = "20news-bydate.tar.gz"

STOP_WORDS = frozenset("""
about above after again against all also although among and another any anyone anything
are around because been before being below between both but can cannot could did does
doing done down during each either else etc even ever every few for from further get gets
got had has have having her here hers herself him himself his how however into its itself
just know least less let like made make many may might more most much must myself neither
never nor not now off often once one only other others our ours ourselves out over own
per perhaps please put rather really said same say says see seem seems she should since
some something still such than that the their theirs them themselves then there these
they thing things think this those though through thus too under until upon use used
using very want was way well were what whatever when where whether which while who whom
whose why will with within without would yes yet you your yours yourself yourselves edu
com writes wrote article re subject lines organization
""".split())

_WORD = re.compile(r"[a-z]{3,20}")

Corpus = namedtuple("Corpus", "train test vocab train_labels test_labels groups")
Corpus.__doc__ = """Bags of words: `train`/`test` float32 [n_docs, vocab_size] counts, `vocab`
the column words, `train_labels`/`test_labels` int64 newsgroup indices into `groups`."""


def tokenize(text):
    """The words of a message body: lower-cased `[a-z]{3,20}` runs, stop words removed."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def _messages(folder):
    """{"train": [(group, words)], "test": [...]} read from the archive, in its order."""
    out = {"train": [], "test": []}
    with tarfile.open(folder / ARCHIVE) as archive:
        for member in archive:
            if not member.isfile():
                continue
            top, group, _ = member.name.split("/")
            text = archive.extractfile(member).read().decode("latin-1")
            body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
            out["train" if top.endswith("train") else "test"].append((group, tokenize(body)))
    return out


def bag_of_words(documents, n_vocab):
    """Counts float32 [n_docs, n_vocab] of `documents`, each a sequence of word ids.

    Raises ValueError naming the document when an id lies outside [0, n_vocab).
    """
    counts = torch.zeros(len(documents), n_vocab)
    for d, ids in enumerate(documents):
        ids = torch.as_tensor(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids) and (ids.min() < 0 or ids.max() >= n_vocab):
            bad = ids[(ids < 0) | (ids >= n_vocab)][0].item()
            raise ValueError(f"bag_of_words: document {d} has word id {bad}, outside the "
                             f"vocabulary of {n_vocab} words (ids 0..{n_vocab - 1})")
        counts[d] = torch.bincount(ids, minlength=n_vocab).float()
    return counts


def load_newsgroups(vocab_size=2000, path=None):
    """20 Newsgroups as a `Corpus` over the `vocab_size` most frequent training words."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"load_newsgroups: `vocab_size` must be a positive int, got "
                         f"{vocab_size!r}")
    folder = dataset_dir("20newsgroups", path)
    messages = _messages(folder)
    frequency = Counter(w for _, words in messages["train"] for w in words)
    vocab = [w for w, _ in sorted(frequency.items(), key=lambda kv: (-kv[1], kv[0]))
             [:vocab_size]]
    index = {w: i for i, w in enumerate(vocab)}
    groups = sorted({g for g, _ in messages["train"]})
    group_index = {g: i for i, g in enumerate(groups)}

    def counts(split):
        order = np.random.default_rng(0).permutation(len(messages[split]))
        docs = [messages[split][i] for i in order]
        ids = [[index[w] for w in words if w in index] for _, words in docs]
        labels = torch.tensor([group_index[g] for g, _ in docs])
        return bag_of_words(ids, len(vocab)), labels

    (train, train_labels), (test, test_labels) = counts("train"), counts("test")
    return Corpus(train, test, vocab, train_labels, test_labels, groups)
