"""eval_ref.py — an independent evaluation of a checkpoint on a top-k teacher dump,
written from docs/training.md ("Evaluation"), to check final_eval.json and `kd eval`.

usage: eval_ref.py CKPT_DIR DUMP.h5 OUT.json

For every position with loss_mask 1, in float64 from the checkpoint's weights
(the forward pass of llama_ref.py):
  ce    −log softmax(z)[next token]
  kl    forward KL(teacher ‖ student) at T = 1 over k + 1 buckets: the teacher's
        top-k probabilities p_i = exp(logprob_i) and its tail 1 − Σp; the student's
        softmax at the same ids and its tail 1 − Σ. A teacher tail ≤ 1e-6 counts as
        none (the top-k is renormalised and there is no tail term).
  top1  the student's argmax equals the teacher's top entry
OUT gets {"ce", "ppl", "kl", "top1", "tokens"}, means over those positions.
"""
import json
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from kdref import load_safetensors  # noqa: E402
from llama_ref import forward  # noqa: E402


def main():
    ckpt, dump, outp = sys.argv[1:4]
    with open(os.path.join(ckpt, "config.json")) as f:
        cfg = json.load(f)
    p = {k: torch.tensor(v, dtype=torch.float64) for k, v in load_safetensors(os.path.join(ckpt, "model.safetensors")).items()}
    with h5py.File(dump, "r") as h:
        tokens = np.asarray(h["tokens"], dtype=np.int64)
        ids = np.asarray(h["topk_ids"], dtype=np.int64)
        lps = np.asarray(h["topk_logprobs"], dtype=np.float64)
        mask = np.asarray(h["loss_mask"]) if "loss_mask" in h else np.ones(ids.shape[:2], dtype=np.uint8)
    ce = kl = top1 = 0.0
    n = 0
    with torch.no_grad():
        for s in range(tokens.shape[0]):
            logits = forward(cfg, p, torch.tensor(tokens[s:s + 1, :-1]))[0]
            logp = torch.log_softmax(logits, dim=-1).numpy()
            for t in range(ids.shape[1]):
                if not mask[s, t]:
                    continue
                y = tokens[s, t + 1]
                ce -= logp[t, y]
                pt = np.exp(lps[s, t])
                tail_t = max(0.0, 1.0 - pt.sum())
                ps = np.exp(logp[t, ids[s, t]])
                tail_s = max(1.0 - ps.sum(), 1e-300)
                if tail_t <= 1e-6:
                    q = pt / pt.sum()
                    kl += float(np.sum(q * (np.log(q) - np.log(ps))))
                else:
                    kl += float(np.sum(pt * (lps[s, t] - np.log(ps)))) + tail_t * (math.log(tail_t) - math.log(tail_s))
                top1 += float(np.argmax(logp[t]) == ids[s, t, np.argmax(lps[s, t])])
                n += 1
    out = {"ce": ce / n, "ppl": math.exp(ce / n), "kl": kl / n, "top1": top1 / n, "tokens": n}
    with open(outp, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
