/*
 * kd_tokenizer_hf.h — a kd_tokenizer as Hugging Face `tokenizers` files, so
 * that transformers' AutoTokenizer.from_pretrained(DIR) encodes a kd
 * checkpoint's text with the same ids as `kd tokenize`; and such files read
 * back (a teacher directory that brings only tokenizer.json).
 *
 * tokenizer.json (format of the `tokenizers` library, version "1.0"):
 *   - byte-level BPE ("gpt2"): model BPE (vocab, merges "left right" in rank
 *     order, ignore_merges as the pre-tokenizer says); pre_tokenizer a
 *     Sequence of one Split per expression of kd's pre-tokenizer (behavior
 *     Isolated: matches and the text between them are words, applied in turn
 *     as llama.cpp does; data/kd_pretok.h) and ByteLevel without its own
 *     regex; decoder ByteLevel. The RAW pre-tokenizers (Gemma 4 style) have
 *     no ByteLevel but byte_fallback, and a normalizer " " → "▁" when spaces
 *     are escaped;
 *   - SentencePiece ("llama"): model BPE with byte_fallback, unk_token and
 *     merges made from the scores (every split a+b of a piece p into two
 *     pieces, ranked by p's score, highest first: the order in which kd's SPM
 *     merges); normalizer: prepend "▁" (add_space_prefix) and " " → "▁";
 *     decoder: "▁" → " ", byte fallback, fuse, strip one leading space;
 *   - added_tokens: every CONTROL / UNKNOWN (special) and USER_DEFINED (not
 *     special) token; post_processor: BOS / EOS as add_bos / add_eos say.
 * tokenizer_config.json: tokenizer_class PreTrainedTokenizerFast, bos / eos /
 * unk tokens, add_bos_token / add_eos_token, and kd_pre_tokenizer (the GGUF
 * pre-tokenizer name, so that kd reads back exactly the tokenizer it wrote).
 *
 * Differences that remain: transformers matches special-token texts in the
 * input (as `kd tokenize --parse-special`); a merge whose pieces or result
 * are not tokens is left out (tokenizers refuses them); transformers'
 * regex engine (Oniguruma) has its own Unicode tables.
 *
 * Reading: tokenizer.json with model BPE — byte-level when its pre_tokenizer
 * or decoder has ByteLevel (the pre-tokenizer: kd_pre_tokenizer from
 * tokenizer_config.json, else the Split expressions as kd writes them, else
 * Llama 3's, Qwen2's or GPT-2's own expressions), SentencePiece-style when
 * it has byte_fallback and a normalizer " " → "▁" (scores from the merge
 * ranks). Anything else is refused with a message naming what was found.
 */
#ifndef KD_TOKENIZER_HF_H
#define KD_TOKENIZER_HF_H

#include "core/kd_err.h"
#include "data/kd_tokenizer.h"

/* Write dir/tokenizer.json and dir/tokenizer_config.json (atomically). */
int kd_tokenizer_save_hf(const kd_tokenizer *tok, const char *dir, kd_err *err);
/* Read dir/tokenizer.json (and dir/tokenizer_config.json when present). */
kd_tokenizer *kd_tokenizer_load_hf(const char *dir, kd_err *err);

#endif
