"""hf_tokenize.py — Hugging Face `tokenizers` encodes texts with a directory's tokenizer.json
(tests/test_tokenizer_hf.c): independent of kd, the library transformers' AutoTokenizer uses.

usage: python hf_tokenize.py DIR TEXTS.json OUT.json [--transformers]
Writes {"ids": [[...], ...]} for every text, with the tokenizer's special tokens added
(add_special_tokens=True, transformers' default). With --transformers the directory is loaded with
transformers.AutoTokenizer.from_pretrained instead (outside CI: a scratch venv with transformers).
"""
import json
import sys


def main():
    d, texts_path, out_path = sys.argv[1:4]
    texts = json.load(open(texts_path, encoding='utf-8'))
    if '--transformers' in sys.argv[4:]:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(d)
        ids = [tok(t)['input_ids'] for t in texts]
    else:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(d + '/tokenizer.json')
        ids = [tok.encode(t, add_special_tokens=True).ids for t in texts]
    json.dump({'ids': ids}, open(out_path, 'w'))


if __name__ == '__main__':
    main()
