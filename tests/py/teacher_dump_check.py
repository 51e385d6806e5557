#!/usr/bin/env python3
"""teacher_dump_check.py — the independent side of tests/test_teacher_dump.c:
checks dumps written by `kd teacher dump` on a llama2.c teacher against
llama2.c's forward recomputed from the ORIGINAL .bin (tests/py/llama2c_ref.py,
float64 numpy) with PyTorch's log_softmax/topk (float64), and against the
tokenizer reference (tests/py/tok_ref.py).

usage:
  teacher_dump_check.py text --model M.bin --tokenizer TOK.bin --text FILE [--text FILE...]
        [--sep SEP] --teacher NAME --dump DUMP.h5 [--dump ...] [--split TRAIN VAL FRACTION]
  teacher_dump_check.py generate --model M.bin --tokenizer TOK.bin --teacher NAME
        [--dump DUMP.h5...] [--greedy DUMP.h5...] [--sampled DUMP.h5[:TEMPERATURE]...]

Every dump: root attributes, the tokenizer group (= TOK.bin), and for every
sequence the stored distributions against the reference forward of its tokens:
  * top-k: the id in slot j has the j-th largest reference log-prob (so ids
    equal the reference top-k, swapped only where reference log-probs tie
    within the value tolerance), and the stored value equals the reference
    log-softmax at that id within TOL = 2^-11·|ref| + ATOL for float16 storage
    (float16 rounding, unit roundoff 2^-11) and 2^-24·|ref| + ATOL for float32,
    where ATOL = 5e-5 covers kd's float32 forward;
  * full logits: max |stored − ref| / max |ref| ≤ 1e-4 (float32 storage).
text: tokens = the documents (FILE split at SEP, empty pieces skipped), each
  BOS + tok_ref.encode(document) + EOS, concatenated and cut into sequences of
  T+1, the last padded with EOS; loss_mask 0 exactly where the label is padding.
  --split: TRAIN and VAL partition those sequences as kd's hash of the index says.
generate: every sequence starts at BOS, loss_mask is all 1; --greedy dumps: every
  token is the argmax of the reference distribution after its prefix (ties
  within ATOL allowed); --sampled dumps: the tokens are plausible samples at
  TEMPERATURE (default 1) of the reference: with p the reference distribution
  at that temperature after each prefix, Σ_t (log p(x_t) + H_t) / sqrt(Σ_t Var_t)
  within ±4.5 (a martingale: mean 0, variance 1 for correct sampling; it moves
  by ~±9 for a temperature off by 25% over 768 tokens) and no token with
  probability below 1e-9. The stored distributions stay at temperature 1.
Prints the measured errors; exits non-zero with a message on the first problem.
"""
import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c_ref  # noqa: E402
import tok_ref  # noqa: E402

ATOL = 5e-5          # kd's float32 forward vs the float64 reference, on log-probs
FULL_RTOL = 1e-4     # full logits: max |Δ| / max |ref|
BOS, EOS = 1, 2


def fail(msg):
    print("teacher_dump_check.py: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


class Ref:
    """Reference log-probs of token prefixes, cached per sequence."""

    def __init__(self, model_path):
        self.m = llama2c_ref.load(model_path)
        self.cache = {}

    def logits(self, toks):
        key = tuple(int(t) for t in toks)
        if key not in self.cache:
            self.cache[key] = llama2c_ref.forward(self.m, list(key))
        return self.cache[key]

    def logprobs(self, toks):
        return torch.log_softmax(torch.from_numpy(self.logits(toks)), dim=-1).numpy()


def check_attrs(f, path, teacher, tok_pieces):
    a = f.attrs
    want = {"format": "kd-teacher-dump", "version": 1, "temperature": 1.0, "teacher": teacher, "vocab_size": 512}
    for key, value in want.items():
        if a.get(key) != value:
            fail("%s: attribute %s = %r, expected %r" % (path, key, a.get(key), value))
    n, T = f["tokens"].shape[0], int(a["seq_len"])
    if int(a["n_seq"]) != n or f["tokens"].shape[1] != T + 1 or f["loss_mask"].shape != (n, T):
        fail("%s: n_seq %d, tokens %s, loss_mask %s" % (path, a["n_seq"], f["tokens"].shape, f["loss_mask"].shape))
    g = f["tokenizer"]
    off, raw = g["piece_offsets"][()], g["piece_bytes"][()].tobytes()
    pieces = [raw[off[i]:off[i + 1]] for i in range(len(off) - 1)]
    # kd's internal form: "▁" for a space; the control pieces lose their newlines
    expect = [p.replace(b" ", "\u2581".encode()) for p in tok_pieces]
    expect[BOS], expect[EOS] = b"<s>", b"</s>"
    if pieces != expect or g.attrs["bos_id"] != BOS or g.attrs["eos_id"] != EOS or g.attrs["model"] != "llama":
        bad = next((i for i in range(min(len(pieces), len(expect))) if pieces[i] != expect[i]), None)
        fail("%s: tokenizer group differs from the tokenizer (piece %s: %r vs %r)" % (
            path, bad, pieces[bad] if bad is not None else None, expect[bad] if bad is not None else None))


def check_values(f, path, ref, stats):
    """The stored distributions of every sequence against the reference forward of its tokens."""
    T, k = int(f.attrs["seq_len"]), int(f.attrs["k"])
    tokens = f["tokens"][()]
    if k:
        ids_all, lp_all = f["topk_ids"][()].astype(np.int64), f["topk_logprobs"][()].astype(np.float64)
        eps = 2.0 ** -11 if f["topk_logprobs"].dtype == np.float16 else 2.0 ** -24
    else:
        logits_all = f["logits"][()].astype(np.float64)
        if f["logits"].dtype != np.float32:
            fail("%s: logits stored as %s, the test writes float32" % (path, f["logits"].dtype))
    worst_ratio, max_abs, swaps, full_err, full_max = 0.0, 0.0, 0, 0.0, 0.0
    for s in range(tokens.shape[0]):
        if k:
            lp = ref.logprobs(tokens[s, :T])                     # [T, V] float64
            top = torch.topk(torch.from_numpy(lp), k, dim=-1, sorted=True)
            rv, ri = top.values.numpy(), top.indices.numpy()     # reference top-k
            ids, got = ids_all[s], lp_all[s]
            at_ids = np.take_along_axis(lp, ids, axis=-1)        # reference log-prob of the stored ids
            tol = eps * np.abs(rv) + ATOL
            rank = np.abs(at_ids - rv) / tol                      # stored id has the j-th largest log-prob
            if rank.max() > 1:
                t, j = np.unravel_index(rank.argmax(), rank.shape)
                fail("%s: sequence %d position %d slot %d: id %d has reference log-prob %.7g, the reference's "
                     "slot %d is id %d with %.7g (tolerance %.3g)" % (path, s, t, j, ids[t, j], at_ids[t, j], j,
                                                                     ri[t, j], rv[t, j], tol[t, j]))
            for t in range(T):
                if len(set(ids[t].tolist())) != k:
                    fail("%s: sequence %d position %d: duplicate ids %s" % (path, s, t, ids[t]))
            swaps += int((ids != ri).sum())
            vtol = eps * np.abs(at_ids) + ATOL
            ratio = np.abs(got - at_ids) / vtol
            if ratio.max() > 1:
                t, j = np.unravel_index(ratio.argmax(), ratio.shape)
                fail("%s: sequence %d position %d slot %d (id %d): stored log-prob %.7g, reference %.7g "
                     "(|Δ| %.3g > tolerance %.3g)" % (path, s, t, j, ids[t, j], got[t, j], at_ids[t, j],
                                                      abs(got[t, j] - at_ids[t, j]), vtol[t, j]))
            worst_ratio = max(worst_ratio, float(ratio.max()))
            max_abs = max(max_abs, float(np.abs(got - at_ids).max()))
        else:
            z = ref.logits(tokens[s, :T])
            full_err = max(full_err, float(np.abs(logits_all[s] - z).max()))
            full_max = max(full_max, float(np.abs(z).max()))
    if k:
        line = "%s: top-%d %s: max |stored − ref| log-prob %.3g, worst %.2f× the tolerance; %d of %d ids " \
               "in another order than the reference (ties)" % (
                   os.path.basename(path), k, f["topk_logprobs"].dtype, max_abs, worst_ratio, swaps, ids_all.size)
    else:
        rel = full_err / full_max
        if rel > FULL_RTOL:
            fail("%s: full logits: max |stored − ref| / max |ref| = %.3g > %g" % (path, rel, FULL_RTOL))
        line = "%s: full logits float32: max |stored − ref| %.3g, relative %.3g (limit %g)" % (
            os.path.basename(path), full_err, rel, FULL_RTOL)
    print(line)
    stats.append(line)


def text_sequences(args, T):
    pieces, scores = tok_ref.load(args.tokenizer)
    lookup = {}
    for i, p in enumerate(pieces):
        lookup.setdefault(p, i)
    stream = []
    for path in args.text:
        data = open(path, "rb").read()
        docs = data.split(args.sep.encode()) if args.sep else [data]
        for d in docs:
            if d:
                stream += tok_ref.encode(d, pieces, scores, lookup, True) + [EOS]
    n = -(-len(stream) // (T + 1))
    toks = np.full((n, T + 1), EOS, np.int32)
    flat = toks.reshape(-1)
    flat[:len(stream)] = stream
    label_pos = np.arange(n * (T + 1)).reshape(n, T + 1)[:, 1:]
    mask = (label_pos < len(stream)).astype(np.uint8)
    return toks, mask, len(stream)


def is_val(i, frac):
    """kd_teacher_dump.c's split of sequence index i (splitmix64 finaliser)."""
    M = (1 << 64) - 1
    z = (i + 0x9e3779b97f4a7c15) & M
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    z ^= z >> 31
    return (z >> 11) * (1.0 / 9007199254740992.0) < frac


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("text", "generate"))
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--text", action="append", default=[])
    ap.add_argument("--sep", default="")
    ap.add_argument("--dump", action="append", default=[])
    ap.add_argument("--split", nargs=3)
    ap.add_argument("--greedy", action="append", default=[])
    ap.add_argument("--sampled", action="append", default=[])
    args = ap.parse_args()
    ref = Ref(args.model)
    tok_pieces, _ = tok_ref.load(args.tokenizer)
    stats = []
    tau = {}
    for i, spec in enumerate(args.sampled):   # PATH or PATH:TEMPERATURE
        path, _, t = spec.rpartition(":")
        if path and t.replace(".", "", 1).isdigit():
            args.sampled[i], tau[path] = path, float(t)
    for path in args.dump + args.greedy + args.sampled:
        greedy, sampled = path in args.greedy, path in args.sampled
        with h5py.File(path, "r") as f:
            check_attrs(f, path, args.teacher, tok_pieces)
            T = int(f.attrs["seq_len"])
            tokens, mask = f["tokens"][()], f["loss_mask"][()]
            if args.mode == "text":
                want, want_mask, _ = text_sequences(args, T)
                if args.split and path in args.split[:2]:
                    val = [is_val(i, float(args.split[2])) for i in range(len(want))]
                    sel = [i for i in range(len(want)) if val[i] == (path == args.split[1])]
                    want, want_mask = want[sel], want_mask[sel]
                if tokens.shape != want.shape or not np.array_equal(tokens, want):
                    bad = np.argwhere(tokens != want)[0] if tokens.shape == want.shape else None
                    fail("%s: tokens %s differ from the tokenizer's encoding of the documents %s (first at %s)" % (
                        path, tokens.shape, want.shape, bad))
                if not np.array_equal(mask, want_mask):
                    fail("%s: loss_mask differs from the padding (first at %s)" % (
                        path, np.argwhere(mask != want_mask)[0]))
                print("%s: %d sequences, %d positions masked (padding): tokens and loss_mask as expected" % (
                    os.path.basename(path), len(tokens), int((mask == 0).sum())))
            else:
                if not (tokens[:, 0] == BOS).all():
                    fail("%s: a generated sequence does not start with BOS: %s" % (path, tokens[:, 0]))
                if not (mask == 1).all():
                    fail("%s: generated sequences must have loss_mask 1 everywhere" % path)
            check_values(f, path, ref, stats)
            if greedy or sampled:
                sumd, var, minp, argmax_ok = 0.0, 0.0, 1.0, 0
                for s in range(len(tokens)):
                    lp = ref.logprobs(tokens[s, :T])
                    if sampled and tau.get(path, 1.0) != 1.0:   # the distribution sampled from
                        lp = torch.log_softmax(torch.from_numpy(ref.logits(tokens[s, :T]) / tau[path]), -1).numpy()
                    x = tokens[s, 1:]
                    at = lp[np.arange(T), x]
                    if greedy:
                        best = lp.max(axis=-1)
                        if (at < best - ATOL).any():
                            t = int(np.argmax(at < best - ATOL))
                            fail("%s: greedy sequence %d, token %d is %d (reference log-prob %.6g) but the "
                                 "reference argmax is %d (%.6g)" % (path, s, t + 1, x[t], at[t], lp[t].argmax(),
                                                                     best[t]))
                        argmax_ok += T
                    p = np.exp(lp)
                    H = -(p * lp).sum(-1)
                    sumd += float((at + H).sum())
                    var += float(((p * lp * lp).sum(-1) - H * H).sum())
                    minp = min(minp, float(np.exp(at.min())))
                if greedy:
                    print("%s: greedy: all %d tokens are the reference argmax chain from BOS" % (
                        os.path.basename(path), argmax_ok))
                if sampled:
                    z = sumd / np.sqrt(var)
                    print("%s: sampled at temperature %g: z = %.2f (|z| ≤ 4.5), smallest reference p of a sampled "
                          "token %.3g" % (os.path.basename(path), tau.get(path, 1.0), z, minp))
                    if abs(z) > 4.5 or minp < 1e-9:
                        fail("%s: the sampled tokens do not follow the teacher at temperature %g (z %.2f, min p %.3g)"
                             % (path, tau.get(path, 1.0), z, minp))
    if args.split:
        with h5py.File(args.split[0], "r") as a, h5py.File(args.split[1], "r") as b:
            na, nb = a["tokens"].shape[0], b["tokens"].shape[0]
            if na == 0 or nb == 0:
                fail("--split: %d training and %d validation sequences; the test wants both non-empty" % (na, nb))
            print("split: %d training + %d validation sequences, as kd's hash of the index says" % (na, nb))
    print("teacher_dump_check.py: ok")


if __name__ == "__main__":
    main()
