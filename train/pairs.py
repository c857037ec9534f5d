"""Sentence-pair sampling and masking for BERT's two pretraining objectives.

Shared by train.py and evaluate.py so both see examples built by one rule:
  * segment A is one or more consecutive sentences of a document;
  * 50%: segment B is the sentences that follow A in the same document
    (NSP label 0, "is next"); 50%: B is a run of sentences from a different
    document (label 1);
  * 15% of the non-special tokens are selected for MLM; of those 80% become
    [MASK], 10% a uniformly random id, 10% stay; labels are -100 elsewhere.
All randomness comes from a numpy Generator the caller seeds.
"""
import numpy as np

PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103
IGNORE = -100


class Corpus:
    """Tokenised sentences grouped by document: document d is sentences
    doc_first[d] .. doc_first[d] + doc_nsent[d] - 1, sentence s is
    ids[sent_off[s]:sent_off[s + 1]]."""

    def __init__(self, ids, sent_off, doc_first, doc_nsent):
        self.ids = ids
        self.sent_off = sent_off
        self.doc_first = doc_first
        self.doc_nsent = doc_nsent
        # positive pairs need two sentences; weight documents by sentence count
        # so every sentence has about the same chance to start segment A
        self.multi = np.nonzero(doc_nsent >= 2)[0]
        w = (doc_nsent[self.multi] - 1).astype(np.float64)
        self.multi_cdf = np.cumsum(w) / w.sum()
        w_all = doc_nsent.astype(np.float64)
        self.all_cdf = np.cumsum(w_all) / w_all.sum()

    @classmethod
    def from_npz(cls, path, heldout):
        """One side of the split in train/work/data/tokens.npz."""
        z = np.load(path)
        doc_off = z["doc_off"]
        keep = z["heldout"] == heldout
        return cls(z["ids"], z["sent_off"], doc_off[:-1][keep],
                   (doc_off[1:] - doc_off[:-1])[keep])

    @classmethod
    def from_docs(cls, docs):
        """docs: list of documents, each a list of sentences as id lists."""
        lens = [len(s) for d in docs for s in d]
        ids = np.array([t for d in docs for s in d for t in s], dtype=np.int32)
        sent_off = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=sent_off[1:])
        nsent = np.array([len(d) for d in docs], dtype=np.int64)
        first = np.concatenate([[0], np.cumsum(nsent)[:-1]]).astype(np.int64)
        return cls(ids, sent_off, first, nsent)

    def sent(self, doc, i):
        s = self.doc_first[doc] + i
        return self.ids[self.sent_off[s]:self.sent_off[s + 1]]

    def n_docs(self):
        return len(self.doc_nsent)


def _take(corpus, doc, start, budget):
    """Sentences of doc from start while they fit in budget tokens (at least one)."""
    out, n, i = [], 0, start
    while i < corpus.doc_nsent[doc]:
        s = corpus.sent(doc, i)
        if out and n + len(s) > budget:
            break
        out.append(s)
        n += len(s)
        i += 1
    return out


def _truncate(a, b, limit, rng):
    # drop tokens from the longer segment, randomly at its front or back, as
    # BERT's original data generator does, so neither end is privileged
    while len(a) + len(b) > limit:
        t = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del t[0]
        else:
            t.pop()


def make_pair(corpus, rng, max_len):
    """-> (ids, type_ids, nsp_label): [CLS] A [SEP] B [SEP], at most max_len tokens."""
    limit = max_len - 3
    # like BERT, sometimes train on shorter sequences so short inputs are not
    # out of distribution at serving time
    target = limit if rng.random() >= 0.1 else int(rng.integers(8, limit + 1))
    doc = corpus.multi[np.searchsorted(corpus.multi_cdf, rng.random(), side="right")]
    n = corpus.doc_nsent[doc]
    start = int(rng.integers(0, n - 1))
    chunk = _take(corpus, doc, start, target)
    if len(chunk) < 2:
        chunk.append(corpus.sent(doc, start + 1))
    a_end = int(rng.integers(1, len(chunk)))
    a = [t for s in chunk[:a_end] for t in s]
    is_next = rng.random() < 0.5
    if is_next:
        b = [t for s in chunk[a_end:] for t in s]
        label = 0
    else:
        while True:
            other = int(np.searchsorted(corpus.all_cdf, rng.random(), side="right"))
            if other != doc:
                break
        ostart = int(rng.integers(0, corpus.doc_nsent[other]))
        rest = _take(corpus, other, ostart, max(target - len(a), 1))
        b = [t for s in rest for t in s]
        label = 1
    a = [int(t) for t in a]
    b = [int(t) for t in b]
    _truncate(a, b, limit, rng)
    ids = [CLS] + a + [SEP] + b + [SEP]
    type_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return ids, type_ids, label


def mask_tokens(ids, rng, vocab_size, prob=0.15):
    """-> (masked ids, labels). Special tokens are never selected."""
    ids = np.array(ids, dtype=np.int64)
    labels = np.full_like(ids, IGNORE)
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    sel = (rng.random(len(ids)) < prob) & ~special
    if not sel.any():
        # an example without a masked token teaches MLM nothing; pick one
        cand = np.nonzero(~special)[0]
        sel[cand[int(rng.integers(0, len(cand)))]] = True
    labels[sel] = ids[sel]
    r = rng.random(len(ids))
    to_mask = sel & (r < 0.8)
    to_rand = sel & (r >= 0.8) & (r < 0.9)
    ids[to_mask] = MASK
    ids[to_rand] = rng.integers(0, vocab_size, int(to_rand.sum()))
    return ids, labels


def make_batch(corpus, rng, batch, max_len, vocab_size):
    """-> dict of int64 arrays padded to the longest example in the batch."""
    exs = []
    for _ in range(batch):
        ids, tt, nsp = make_pair(corpus, rng, max_len)
        mids, lab = mask_tokens(ids, rng, vocab_size)
        exs.append((mids, tt, lab, nsp))
    L = max(len(e[0]) for e in exs)
    out = {
        "input_ids": np.zeros((batch, L), dtype=np.int64),
        "token_type_ids": np.zeros((batch, L), dtype=np.int64),
        "attention_mask": np.zeros((batch, L), dtype=np.int64),
        "labels": np.full((batch, L), IGNORE, dtype=np.int64),
        "next_sentence_label": np.array([e[3] for e in exs], dtype=np.int64),
    }
    for i, (mids, tt, lab, _) in enumerate(exs):
        n = len(mids)
        out["input_ids"][i, :n] = mids
        out["token_type_ids"][i, :n] = tt
        out["attention_mask"][i, :n] = 1
        out["labels"][i, :n] = lab
    return out
