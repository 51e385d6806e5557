#!/usr/bin/env python3
"""vocab_fixtures.py — build tests/data/vocab/ (the pre-tokenizer fixtures of tests/test_pretok.c)
from llama.cpp's models/ggml-vocab-*.gguf and their .inp/.out test vectors.

usage: tools/vocab_fixtures.py LLAMA_CPP_DIR OUT_DIR

For each byte-level BPE vocabulary with test vectors it writes NAME.gguf.xz, a reduced copy that
gives the same ids on the texts (checked with llama.cpp through node-llama-cpp, tests/node):
  - every token that is not NORMAL is kept as it is (special texts are matched in raw text);
  - a NORMAL token is kept when its text is a substring of some text's encoded form (GPT-2 byte
    characters of its UTF-8, or the UTF-8 itself with spaces as U+2581): every string the encoder
    looks up (a word, a symbol, a byte) is such a substring, so its id does not change; any other
    token becomes a unique placeholder "\\x7f<id>" that no text contains;
  - a merge "a b" is kept when a+b is such a substring: only those can ever be queued, and the
    kept merges keep their order, so BPE merges alike (only the order of ranks matters).
It copies NAME.gguf.inp/.out, and writes pre-sweep.json.xz: llama.cpp's ids for the same texts
plus extra ones (scripts, digits, emoji, spaces) with the reduced llama-bpe vocabulary under every
tokenizer.ggml.pre name llama.cpp knows (the names come from kd: build/kd is not needed, the list
is read from data/kd_pretok.c).
Needs: python3, xz, node with tests/node's node_modules.
"""
import json, lzma, os, re, struct, subprocess, sys, tempfile

SEP = "\n__ggml_vocab_test__\n"
OFFICIAL = ["gpt-2", "llama-bpe", "qwen2", "qwen35", "deepseek-llm", "deepseek-coder", "falcon", "mpt",
            "starcoder", "refact", "command-r", "gemma-4"]
SWEEP_BASE = "llama-bpe"
EXTRA = [
    "HelloWorld DLLs iPhone MIXEDcase ABCdef camelCaseWord",
    "\u00dcn\u00efc\u00f6d\u00e9 Stra\u00dfe \u0391\u0392\u0393 \u03b1\u03b2\u03b3 \u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca\u3002\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5 \ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0e44\u0e17\u0e22 \u0e20\u0e32\u0e29\u0e32 \u0645\u0631\u062d\u0628\u0627\u060c \u0639\u0627\u0644\u0645",
    "\u0661\u0662\u0663\u0664\u0665 \u0666\u0667\u0668 1234567 12,345.67 3.14159 \u00bd \u00b2 10000000000 0123456789012",
    "\U0001f44b\U0001f3fd \U0001f1e9\U0001f1ea \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f \U0001f916!!",
    "a  b   c\t\td\n\n\ne \u3000f\u00a0g\u2003h\u0085i  end   ",
    "I'M you'RE she's THEY'LL we'd it'S ' s 'll '''",
    "def f(x):\n    return x**2  # comment\r\n\tif (a<=b) {c++;}\n\n\n",
    "<sentinel:12> IMGIMGABCZ e\u0301 a\u0308 n\u0303 \u1100\u1161",
    "\u00e9t\u00e9 na\u00efve caf\u00e9 \u2014 \u201cquotes\u201d \u2018single\u2019 \u2026 \uff01\uff1f\uff0c",
]

T_STR, T_ARR = 8, 9
FMT = {0: '<B', 1: '<b', 2: '<H', 3: '<h', 4: '<I', 5: '<i', 6: '<f', 7: '<?', 10: '<Q', 11: '<q', 12: '<d'}


def gguf_read(path):
    b = open(path, 'rb').read()
    o = 4

    def take(f):
        nonlocal o
        v = struct.unpack_from(f, b, o)[0]
        o += struct.calcsize(f)
        return v

    def val(t):
        nonlocal o
        if t == T_STR:
            n = take('<Q')
            o += n
            return b[o - n:o]
        if t == T_ARR:
            at, n = take('<I'), take('<Q')
            return (at, [val(at) for _ in range(n)])
        return take(FMT[t])

    assert b[:4] == b'GGUF'
    take('<I')
    nt, nkv = take('<Q'), take('<Q')
    assert nt == 0, path + ': has tensors'
    kv = []
    for _ in range(nkv):
        k = val(T_STR).decode()
        t = take('<I')
        kv.append([k, t, val(t)])
    return kv


def gguf_bytes(kv):
    out = bytearray(b'GGUF' + struct.pack('<IQQ', 3, 0, len(kv)))

    def val(t, v):
        if t == T_STR:
            out.extend(struct.pack('<Q', len(v)) + v)
        elif t == T_ARR:
            out.extend(struct.pack('<IQ', v[0], len(v[1])))
            for x in v[1]:
                val(v[0], x)
        else:
            out.extend(struct.pack(FMT[t], v))

    for k, t, v in kv:
        val(T_STR, k.encode())
        out.extend(struct.pack('<I', t))
        val(t, v)
    while len(out) % 32:
        out.append(0)
    return bytes(out)


def get(kv, key):
    for k, t, v in kv:
        if k == key:
            return v
    return None


def byte_chars():
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or b >= 0xAE]
    m, k = {}, 0
    for b in range(256):
        if b in keep:
            m[b] = chr(b)
        else:
            m[b] = chr(256 + k)
            k += 1
    return m


def corpus(texts):
    """Every form in which the encoder may look up a substring of these texts."""
    bc = byte_chars()
    forms = []
    for t in texts:
        u = t.encode('utf-8', 'replace')
        forms.append(''.join(bc[x] for x in u).encode())
        forms.append(u.replace(b' ', '\u2581'.encode()))
        forms.append(u)
    return b'\x00'.join(forms)


def reduce(kv, texts):
    c = corpus(texts)
    toks = get(kv, 'tokenizer.ggml.tokens')[1]
    types = get(kv, 'tokenizer.ggml.token_type')
    types = types[1] if types else [1] * len(toks)
    new = []
    for i, (t, ty) in enumerate(zip(toks, types)):
        if ty != 1 or t in c:
            new.append(t)
        else:
            ph = b'\x7f' + str(i).encode()
            assert ph not in c
            new.append(ph)
    out = []
    for k, t, v in kv:
        if k == 'tokenizer.ggml.tokens':
            v = (v[0], new)
        elif k == 'tokenizer.ggml.merges':
            v = (v[0], [m for m in v[1] if m.replace(b' ', b'', 1) in c])
        elif k.startswith('tokenizer.chat_template'):
            continue   # not needed to tokenize
        out.append([k, t, v])
    return out


def node_ids(texts, files):
    here = os.path.dirname(os.path.abspath(__file__))
    nd = os.path.join(here, '..', 'tests', 'node')
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(texts, f)
    r = subprocess.run(['node', os.path.join(nd, 'tokenize_vocab.mjs'), f.name] + files, cwd=nd, capture_output=True,
                       text=True)
    os.unlink(f.name)
    if r.returncode != 0:   # llama.cpp aborted (a GGML_ASSERT): no ids
        return {'ok': False, 'error': (r.stderr.strip().splitlines() or ['exit %d' % r.returncode])[-1]}
    res = json.loads(r.stdout)
    assert res['ok'], res
    return res


def retry_without_spaces(texts, gguf):
    """llama.cpp's ids for the texts without whitespace (null for the others), or None: the raw-UTF-8
    "whitespace" split aborts llama.cpp (a GGML_ASSERT) on a merge lookup with a space."""
    keep = [i for i, t in enumerate(texts) if t and not any(c.isspace() for c in t)]
    r = node_ids([texts[i] for i in keep], [gguf]) if keep else {'ok': False}
    if not r['ok'] or r['errors']:
        return None
    out = [None] * len(texts)
    for i, v in zip(keep, r['ids'][gguf]):
        out[i] = v
    return out


def read_inp(path):
    parts = open(path, encoding='utf-8').read().split(SEP)
    return parts[:-1] if parts and parts[-1] == '' else parts


def read_out(path):
    return [[int(x) for x in line.split()] for line in open(path).read().split('\n')[:-1]]


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    tmp = os.environ.get('VOCAB_FIXTURES_TMP') or tempfile.mkdtemp()   # set: reuse the reduced files there
    os.makedirs(tmp, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    names = re.findall(r'\{"([^"]+)", "[A-Z0-9_]+"\}', open(os.path.join(here, '..', 'data', 'kd_pretok.c')).read())
    report = {}
    base_inp = read_inp(os.path.join(src, 'models', 'ggml-vocab-llama-bpe.gguf.inp'))
    for name in OFFICIAL:
        g = os.path.join(src, 'models', 'ggml-vocab-%s.gguf' % name)
        inp, out = read_inp(g + '.inp'), read_out(g + '.out')
        assert len(inp) == len(out), name
        texts = inp + (EXTRA if name == SWEEP_BASE else [])
        rp = os.path.join(tmp, 'ggml-vocab-%s.gguf' % name)
        if os.path.exists(rp):
            red = open(rp, 'rb').read()
        else:
            red = gguf_bytes(reduce(gguf_read(g), texts))
            open(rp, 'wb').write(red)
        if os.environ.get('VOCAB_FIXTURES_SWEEP_ONLY'):
            continue
        res = node_ids(inp, [g, rp])
        full, small = res['ids'][g], res['ids'][rp]
        report[name] = {'vectors': len(inp), 'llama.cpp == .out': sum(a == b for a, b in zip(full, out)),
                        'reduced == full': sum(a == b for a, b in zip(small, full)), 'bytes': len(red)}
        assert small == full, name + ': the reduced vocabulary changes llama.cpp ids'
        with lzma.open(os.path.join(dst, 'ggml-vocab-%s.gguf.xz' % name), 'wb', preset=9 | lzma.PRESET_EXTREME) as f:
            f.write(red)
        for ext in ('.inp', '.out'):
            open(os.path.join(dst, 'ggml-vocab-%s.gguf%s' % (name, ext)), 'wb').write(open(g + ext, 'rb').read())
    # the sweep: every name on the reduced llama-bpe vocabulary
    base = gguf_read(os.path.join(tmp, 'ggml-vocab-%s.gguf' % SWEEP_BASE))
    texts = base_inp + EXTRA
    files = []
    for n in names:
        kv = [[k, t, (n.encode() if k == 'tokenizer.ggml.pre' else v)] for k, t, v in base]
        p = os.path.join(tmp, 'pre-%s.gguf' % n)
        open(p, 'wb').write(gguf_bytes(kv))
        files.append(p)
    ids, failed, release = {}, {}, None
    todo = list(zip(names, files))
    for i in range(0, len(todo), 16):   # 16 files a process; one process each when llama.cpp aborts on one
        chunk = todo[i:i + 16]
        res = node_ids(texts, [p for _, p in chunk])
        for n, p in chunk:
            r = res if res['ok'] else node_ids(texts, [p])
            if not r['ok'] or r['errors']:
                failed[n] = r.get('error') or r['errors'][p]
                sub = retry_without_spaces(texts, p)
                if sub:
                    ids[n] = sub
                continue
            ids[n], release = r['ids'][p], r['llama_cpp_release']
    report['sweep'] = {'names': len(ids), 'texts': len(texts), 'llama.cpp failed': failed}
    sweep = {'vocab': 'ggml-vocab-%s.gguf.xz' % SWEEP_BASE, 'llama_cpp_release': release, 'texts': texts,
             'ids': ids, 'failed': failed}
    with lzma.open(os.path.join(dst, 'pre-sweep.json.xz'), 'wt', preset=9 | lzma.PRESET_EXTREME) as f:
        json.dump(sweep, f, separators=(',', ':'))
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == '__main__':
    main()
