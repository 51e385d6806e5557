/*
 * kd_pretok.c — byte-level BPE pre-tokenizers (see kd_pretok.h): the table of
 * llama.cpp's pre-tokenizer names and splits, their PCRE2 compilation, and
 * the split itself.
 */
#include "data/kd_pretok.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the expressions ------------------------------------------------------------------------------------------ */
/* Written for PCRE2 in UTF mode without UCP; see kd_pretok.h for the rules. */

#define CONTR   "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define NL_TAIL "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3 CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" NL_TAIL
#define RE_QWEN2  CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" NL_TAIL
#define RE_QWEN35 CONTR "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|" NL_TAIL
#define RE_JAIS2                                                                                                     \
    CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s{512}(?!\\S)|"    \
          "\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|"    \
          "\\s{1,2}(?!\\S)|\\s{1}"
/* DeepSeek LLM's letters: Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee… as a literal class */
#define DS_LETTERS                                                                                                   \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}"   \
    "\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}"      \
    "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"        \
    "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-"         \
    "\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}"          \
    "\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-"          \
    "\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"          \
    "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}"           \
    "\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}"          \
    "\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-"          \
    "\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"          \
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-"     \
    "\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-"        \
    "\\x{1E943}"
#define RE_DS3_MAIN                                                                                                  \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"                \
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|" NL_TAIL
#define RE_CJK_KANA "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+"
#define RE_BLOOM " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}\\x{60C})]+"
/* upper-then-lower words; llama.cpp's \p{Lu}… classes all mean letter (see kd_pretok.h) */
#define CASED(L)                                                                                                     \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[" L "])([^a-z]))*((?=[" L "])([^A-Z]))+" CONTR "?|"                                   \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[" L "])([^a-z]))+((?=[" L "])([^A-Z]))*" CONTR "?|"
#define RE_GPT4O CASED("\\p{L}") "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" NL_TAIL
/* llama.cpp's hand-written digit split of AFMoE and Tiny Aya: the text before a run of digits and
 * its first 1-2 digits (the run's length mod 3), then groups of three */
#define RE_DIGITS3 "\\P{N}*(?:\\p{N}{1,2}(?=(?:\\p{N}{3})*(?!\\p{N}))|\\p{N}{3})"
/* llama.cpp's hand-written Kimi-K2 split; Han is its list of CJK ideograph blocks */
#define HAN                                                                                                          \
    "[\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{20000}-\\x{2A6DF}\\x{2A700}-\\x{2B73F}\\x{2B740}-\\x{2B81F}"          \
    "\\x{2B820}-\\x{2CEAF}\\x{2CEB0}-\\x{2EBEF}\\x{F900}-\\x{FAFF}\\x{2F800}-\\x{2FA1F}]"
#define RE_NEWLINES "[^\\n]+|[\\n]+"

enum { MAX_RE = 6 };

typedef struct pre_type {
    const char *type;             /* llama.cpp's LLAMA_VOCAB_PRE_TYPE_* */
    unsigned flags;
    const char *re[MAX_RE];
} pre_type;

#define IGN KD_PRETOK_IGNORE_MERGES
static const pre_type TYPES[] = {
    {"DEFAULT", 0, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"LLAMA3", IGN, {RE_LLAMA3}},
    {"JAIS2", 0, {RE_JAIS2}},
    {"DBRX", 0, {RE_LLAMA3}},
    {"SMAUG", 0, {RE_LLAMA3}},
    {"DEEPSEEK_LLM", 0,
     {"[\\r\\n]", "\\s?[" DS_LETTERS "]+", "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      "\\s+$", "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}+"}},
    {"DEEPSEEK3_LLM", 0, {"\\p{N}{1,3}", RE_CJK_KANA, RE_DS3_MAIN}},
    {"HUNYUAN_DENSE", 0, {"\\p{N}{1,3}", RE_CJK_KANA, RE_DS3_MAIN}},
    {"JOYAI_LLM", 0, {"\\p{N}{1,3}", RE_CJK_KANA, RE_DS3_MAIN}},
    {"YOUTU", IGN,
     {"[\\x{AC00}-\\x{D7A3}\\x{3131}-\\x{318E}]+|[\\x{FF01}\\x{2026}\\x{201C}\\x{201D}\\x{2018}\\x{2019}\\x{2014}"
      "\\x{FF1A}\\x{FF1B}\\x{FF0C}\\x{3001}-\\x{303F}\\x{FE30}-\\x{FE4F}]+|[\\x{3105}-\\x{312F}]+|" RE_CJK_KANA,
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]*[\\p{L}\\p{M}]+" CONTR "?|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+[\\p{L}\\p{M}]*"
      CONTR "?|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" NL_TAIL}},
    {"DEEPSEEK_CODER", 0,
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+", "\\p{N}"}},
    {"FALCON", 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
    {"STARCODER", 0, {"\\p{N}", RE_GPT2}},
    {"REFACT", 0, {"\\p{N}", RE_GPT2}},
    {"COMMAND_R", 0, {"\\p{N}", RE_GPT2}},
    {"SMOLLM", 0, {"\\p{N}", RE_GPT2}},
    {"CODESHELL", 0, {"\\p{N}", RE_GPT2}},
    {"EXAONE", 0, {"\\p{N}", RE_GPT2}},
    {"MINERVA", 0, {"\\p{N}", RE_GPT2}},
    {"MELLUM2", 0, {"\\p{N}", RE_GPT2}},
    {"GPT2", 0, {RE_GPT2}},
    {"MPT", 0, {RE_GPT2}},
    {"OLMO", 0, {RE_GPT2}},
    {"JAIS", 0, {RE_GPT2}},
    {"TRILLION", 0, {RE_GPT2}},
    {"GRANITE_DOCLING", 0, {RE_GPT2}},
    {"STABLELM2", 0, {RE_QWEN2}},
    {"QWEN2", 0, {RE_QWEN2}},
    {"HUNYUAN", 0, {RE_QWEN2}},
    {"SOLAR_OPEN", 0, {RE_QWEN2}},
    {"QWEN35", 0, {RE_QWEN35}},
    {"PORO", 0, {RE_BLOOM}},
    {"BLOOM", 0, {RE_BLOOM}},
    {"GPT3_FINNISH", 0, {RE_BLOOM}},
    {"CHATGLM4", 0, {RE_LLAMA3}},
    {"VIKING", 0, {RE_BLOOM, "\\p{N}"}},
    {"TEKKEN", IGN,
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|"
      "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|"
      NL_TAIL}},
    {"CHAMELEON", 0,
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2}},
    {"GPT4O", 0, {RE_GPT4O}},
    {"MINIMAX_M2", 0, {RE_GPT4O}},
    {"GRANITE_EMB_MULTI", IGN, {CASED("\\p{L}\\p{M}") "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" NL_TAIL}},
    {"TINY_AYA", 0,
     {RE_DIGITS3,
      "[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]*[\\p{L}\\p{M}]+" CONTR "?|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+[\\p{L}\\p{M}]*"
      CONTR "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" NL_TAIL}},
    {"KIMI_K2", 0,
     {HAN "+|[^\\r\\n\\p{L}\\p{N}]?(?:(?!" HAN ")\\p{L})+" CONTR "?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" NL_TAIL}},
    {"SUPERBPE", 0, {"\\p{N}+", "(?=(\\d{3})+(?!\\d))"}},
    {"BAILINGMOE", 0,
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}},
    {"SEED_CODER", 0, {CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|" NL_TAIL}},
    {"GROK_2", 0, {RE_QWEN2}},
    {"AFMOE", 0,
     {RE_DIGITS3,
      "[\\x{4E00}-\\x{9FFF}\\x{3400}-\\x{4DBF}\\x{8C48}-\\x{FAFF}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}\\x{FF65}-"
      "\\x{FF9F}\\x{2F00}-\\x{2FDF}\\x{E40}-\\x{E7F}\\x{E80}-\\x{EFF}\\x{1780}-\\x{17FF}\\x{1000}-\\x{109F}\\x{AA60}-"
      "\\x{AA7F}\\x{A9E0}-\\x{A9FF}\\x{AC00}-\\x{D7AF}\\x{1100}-\\x{11FF}]+",
      RE_DS3_MAIN}},
    {"LAGUNA", 0, {RE_NEWLINES, RE_QWEN2}},
    {"EXAONE_MOE", 0,
     {CONTR "|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|"
      "\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}},
    {"GEMMA4", KD_PRETOK_RAW | KD_PRETOK_ESCAPE_SPACE | KD_PRETOK_NEWLINE_TOKENS, {RE_NEWLINES}},
    {"SARVAM_MOE", KD_PRETOK_RAW | KD_PRETOK_ESCAPE_SPACE, {RE_NEWLINES}},
    {"MINICPM5", IGN,
     {"\\p{N}{1,3}", CONTR "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" NL_TAIL}},
    {"WHITESPACE", KD_PRETOK_RAW, {"\\S+"}},
};
#define N_TYPES (sizeof TYPES / sizeof *TYPES)

/* tokenizer.ggml.pre names → type (llama.cpp's llama_vocab::impl::load) */
static const struct {
    const char *name, *type;
} NAMES[] = {
    {"default", "DEFAULT"},          {"minicpm5", "MINICPM5"},         {"llama3", "LLAMA3"},
    {"llama-v3", "LLAMA3"},          {"llama-bpe", "LLAMA3"},          {"falcon3", "LLAMA3"},
    {"falcon-h1", "LLAMA3"},         {"pixtral", "LLAMA3"},            {"midm-2.0", "LLAMA3"},
    {"lfm2", "LLAMA3"},              {"jina-v5-nano", "LLAMA3"},       {"deepseek-llm", "DEEPSEEK_LLM"},
    {"deepseek-coder", "DEEPSEEK_CODER"}, {"deepseek-v3", "DEEPSEEK3_LLM"}, {"youtu", "YOUTU"},
    {"falcon", "FALCON"},            {"mpt", "MPT"},                   {"starcoder", "STARCODER"},
    {"gpt-2", "GPT2"},               {"phi-2", "GPT2"},                {"jina-es", "GPT2"},
    {"jina-de", "GPT2"},             {"gigachat", "GPT2"},             {"jina-v2-es", "GPT2"},
    {"jina-v2-de", "GPT2"},          {"a.x-4.0", "GPT2"},              {"mellum", "GPT2"},
    {"modern-bert", "GPT2"},         {"jais-2", "JAIS2"},              {"gemma4", "GEMMA4"},
    {"granite-embed-multi-311m", "GEMMA4"}, {"sarvam-moe", "SARVAM_MOE"}, {"jina-v1-en", "GPT2"},
    {"jina-v2-code", "GPT2"},        {"roberta-bpe", "GPT2"},          {"whitespace", "WHITESPACE"},
    {"refact", "REFACT"},            {"command-r", "COMMAND_R"},       {"qwen2", "QWEN2"},
    {"deepseek-r1-qwen", "QWEN2"},   {"kormo", "QWEN2"},               {"f2llmv2", "QWEN2"},
    {"qwen35", "QWEN35"},            {"stablelm2", "STABLELM2"},       {"olmo", "OLMO"},
    {"dbrx", "DBRX"},                {"smaug-bpe", "SMAUG"},           {"poro-chat", "PORO"},
    {"glm4", "CHATGLM4"},            {"chatglm-bpe", "CHATGLM4"},      {"viking", "VIKING"},
    {"jais", "JAIS"},                {"tekken", "TEKKEN"},             {"smollm", "SMOLLM"},
    {"codeshell", "CODESHELL"},      {"bloom", "BLOOM"},               {"gpt3-finnish", "GPT3_FINNISH"},
    {"exaone", "EXAONE"},            {"exaone4", "GPT2"},              {"exaone-moe", "EXAONE_MOE"},
    {"chameleon", "CHAMELEON"},      {"minerva-7b", "MINERVA"},        {"megrez", "QWEN2"},
    {"gpt-4o", "GPT4O"},             {"llama4", "GPT4O"},              {"kanana2", "GPT4O"},
    {"talkie", "GPT4O"},             {"granite-embed-multi-97m", "GRANITE_EMB_MULTI"}, {"tiny_aya", "TINY_AYA"},
    {"cohere2moe", "TINY_AYA"},      {"superbpe", "SUPERBPE"},         {"trillion", "TRILLION"},
    {"granite-docling", "GRANITE_DOCLING"}, {"bailingmoe", "BAILINGMOE"}, {"bailingmoe2", "BAILINGMOE"},
    {"llada-moe", "BAILINGMOE"},     {"seed-coder", "SEED_CODER"},     {"hunyuan", "HUNYUAN"},
    {"hunyuan-dense", "HUNYUAN_DENSE"}, {"joyai-llm", "JOYAI_LLM"},    {"kimi-k2", "KIMI_K2"},
    {"grok-2", "GROK_2"},            {"afmoe", "AFMOE"},               {"laguna", "LAGUNA"},
    {"minimax-m2", "MINIMAX_M2"},    {"solar-open", "SOLAR_OPEN"},     {"mellum2", "MELLUM2"},
};
#define N_NAMES (sizeof NAMES / sizeof *NAMES)

size_t kd_pretok_names(const char *const **names) {
    static const char *list[N_NAMES];
    for (size_t i = 0; i < N_NAMES; i++) list[i] = NAMES[i].name;
    if (names) *names = list;
    return N_NAMES;
}

static const pre_type *find_type(const char *pre) {
    if (!pre || !pre[0]) pre = "default";
    for (size_t i = 0; i < N_NAMES; i++) {
        if (strcmp(pre, NAMES[i].name)) continue;
        for (size_t t = 0; t < N_TYPES; t++)
            if (!strcmp(TYPES[t].type, NAMES[i].type)) return &TYPES[t];
    }
    return NULL;
}

int kd_pretok_known(const char *pre) { return find_type(pre) != NULL; }

/* ---- compiled pre-tokenizer ----------------------------------------------------------------------------------- */

struct kd_pretok {
    const pre_type *t;
    pcre2_code *code[MAX_RE];
    int n;
};

void kd_pretok_free(kd_pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) pcre2_code_free(p->code[i]);
    free(p);
}

kd_pretok *kd_pretok_new(const char *pre, kd_err *err) {
    const pre_type *t = find_type(pre);
    if (!t) {
        kd_errf(err, "tokenizer.ggml.pre '%.60s' is not a pre-tokenizer llama.cpp knows", pre);
        return NULL;
    }
    kd_pretok *p = calloc(1, sizeof *p);
    if (!p) {
        kd_errf(err, "pre-tokenizer: out of memory");
        return NULL;
    }
    p->t = t;
    for (int i = 0; i < MAX_RE && t->re[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        p->code[i] = pcre2_compile((PCRE2_SPTR)t->re[i], PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &ec,
                                   &eo, NULL);
        if (!p->code[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            kd_errf(err, "pre-tokenizer %s: expression %d does not compile at offset %zu: %s", t->type, i + 1,
                    (size_t)eo, (const char *)msg);
            kd_pretok_free(p);
            return NULL;
        }
        p->n = i + 1;
        pcre2_jit_compile(p->code[i], PCRE2_JIT_COMPLETE);   /* faster when available; the interpreter otherwise */
    }
    return p;
}

unsigned kd_pretok_flags(const kd_pretok *p) { return p->t->flags; }
const char *kd_pretok_type(const kd_pretok *p) { return p->t->type; }

/* ---- splitting ------------------------------------------------------------------------------------------------ */

void kd_words_free(kd_words *w) {
    free(w->text);
    free(w->end);
    free(w->cpt);
    free(w->off);
    free(w->voff);
    free(w->pa);
    free(w->pb);
    free(w->view);
    pcre2_match_data_free(w->md);
    memset(w, 0, sizeof *w);
}

/* One code point at s[*i..n) as llama.cpp's unicode_cpt_from_utf8 reads it; an invalid start is U+FFFD (one byte). */
static uint32_t lenient_cpt(const unsigned char *s, size_t n, size_t *i) {
    unsigned c = s[*i];
    size_t l = c < 0x80 ? 1 : !(c & 0x40) ? 0 : !(c & 0x20) ? 2 : !(c & 0x10) ? 3 : !(c & 0x08) ? 4 : 0;
    if (l == 0 || *i + l > n) goto bad;
    uint32_t cp = l == 1 ? c : l == 2 ? c & 0x1F : l == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; k < l; k++) {
        if ((s[*i + k] & 0xC0) != 0x80) goto bad;
        cp = cp << 6 | (s[*i + k] & 0x3F);
    }
    *i += l;
    return cp;
bad:
    *i += 1;
    return 0xFFFD;
}

static size_t put_cpt(uint32_t cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Unicode White_Space above ASCII (llama.cpp's list; these become U+000B for matching) */
static int wide_space(uint32_t c) {
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* The code point starting at view byte v, among code points a..b (voff is increasing). */
static size_t cpt_at(const unsigned *voff, size_t a, size_t b, size_t v) {
    while (a < b) {
        size_t mid = a + (b - a) / 2;
        if (voff[mid] < v) a = mid + 1;
        else b = mid;
    }
    return a;
}

/* Append piece [a, b) (code point indices) to the next list. */
static int push_piece(kd_words *w, size_t *np, size_t a, size_t b) {
    if (b <= a) return 0;
    size_t cap = w->piece_cap;
    if (*np + 1 > cap) {
        size_t c2 = cap;
        if (grow((void **)&w->pa, &cap, *np + 1, sizeof *w->pa) < 0) return -1;
        if (grow((void **)&w->pb, &c2, *np + 1, sizeof *w->pb) < 0) return -1;
        w->piece_cap = cap < c2 ? cap : c2;
    }
    w->pa[*np] = (unsigned)a;
    w->pb[*np] = (unsigned)b;
    (*np)++;
    return 0;
}

int kd_pretok_split(const kd_pretok *p, const char *s, size_t n, kd_words *w, kd_err *err) {
    const unsigned char *u = (const unsigned char *)s;
    w->n = w->len = 0;
    if (n > (UINT32_MAX - 1) / 3) return kd_errf(err, "pre-tokenizer: a text of %zu bytes is too long to split", n);
    /* code points, their repaired UTF-8 (text) and the matching view (wide spaces → VT) */
    if (grow((void **)&w->cpt, &w->cpt_cap, n + 1, sizeof *w->cpt) < 0) goto oom;
    size_t m = 0;
    for (size_t i = 0; i < n;) w->cpt[m++] = lenient_cpt(u, n, &i);
    size_t c1 = w->off_cap, c2 = w->off_cap;
    if (grow((void **)&w->off, &c1, m + 1, sizeof *w->off) < 0 || grow((void **)&w->voff, &c2, m + 1, sizeof *w->voff) < 0)
        goto oom;
    w->off_cap = c1 < c2 ? c1 : c2;
    /* an invalid byte becomes 3 bytes (U+FFFD), nothing else grows; the view is never longer than the text */
    if (grow((void **)&w->text, &w->cap, 3 * n + 1, 1) < 0 || grow((void **)&w->view, &w->view_cap, 3 * n + 1, 1) < 0)
        goto oom;
    size_t tl = 0, vl = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t c = w->cpt[i];
        w->off[i] = (unsigned)tl;
        w->voff[i] = (unsigned)vl;
        tl += put_cpt(c > 0x10FFFF ? 0xFFFD : c, w->text + tl);
        uint32_t v = c > 0x7F && wide_space(c) ? 0x0B : (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF ? 0xE000 : c;
        vl += put_cpt(v, w->view + vl);
    }
    w->off[m] = (unsigned)tl;
    w->voff[m] = (unsigned)vl;
    w->len = tl;
    if (!w->md && !(w->md = pcre2_match_data_create(16, NULL))) goto oom;

    /* pieces: [pa[k], pb[k]) in code points; each expression splits every piece */
    size_t np = 0;
    if (push_piece(w, &np, 0, m) < 0) goto oom;
    unsigned *qa = NULL, *qb = NULL;
    for (int r = 0; r < p->n; r++) {
        size_t cur = np;
        /* the current list moves aside; the next one is built in pa/pb */
        unsigned *ta = realloc(qa, (cur + 1) * sizeof *qa), *tb = ta ? realloc(qb, (cur + 1) * sizeof *qb) : NULL;
        if (ta) qa = ta;
        if (tb) qb = tb;
        if (!ta || !tb) goto oom2;
        memcpy(qa, w->pa, cur * sizeof *qa);
        memcpy(qb, w->pb, cur * sizeof *qb);
        np = 0;
        for (size_t k = 0; k < cur; k++) {
            size_t a = qa[k], b = qb[k];
            PCRE2_SPTR subj = (PCRE2_SPTR)(w->view + w->voff[a]);
            size_t sl = w->voff[b] - w->voff[a], pos = 0, last = 0;
            uint32_t opts = 0;
            for (;;) {
                int rc = pcre2_match(p->code[r], subj, sl, pos, opts | PCRE2_NO_UTF_CHECK, w->md, NULL);
                if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                    rc = pcre2_match(p->code[r], subj, sl, pos, opts | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, w->md, NULL);
                if (rc == PCRE2_ERROR_NOMATCH) {
                    if (!opts || pos >= sl) break;
                    /* after an empty match: no non-empty one here, so search again one character on */
                    pos++;
                    while (pos < sl && (subj[pos] & 0xC0) == 0x80) pos++;
                    opts = 0;
                    continue;
                }
                if (rc < 0) {
                    PCRE2_UCHAR msg[160];
                    pcre2_get_error_message(rc, msg, sizeof msg);
                    free(qa);
                    free(qb);
                    return kd_errf(err, "pre-tokenizer %s: expression %d failed on a piece of %zu bytes: %s",
                                   p->t->type, r + 1, sl, (const char *)msg);
                }
                PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
                size_t ms = ov[0], me = ov[1];
                size_t cl = cpt_at(w->voff, a, b, w->voff[a] + last), cs = cpt_at(w->voff, a, b, w->voff[a] + ms);
                if (push_piece(w, &np, cl, cs) < 0 || push_piece(w, &np, cs, cpt_at(w->voff, a, b, w->voff[a] + me)) < 0)
                    goto oom2;
                last = pos = me;
                opts = me == ms ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
            }
            if (push_piece(w, &np, cpt_at(w->voff, a, b, w->voff[a] + last), b) < 0) goto oom2;
        }
    }
    free(qa);
    free(qb);
    if (grow((void **)&w->end, &w->end_cap, np + 1, sizeof *w->end) < 0) goto oom;
    for (size_t k = 0; k < np; k++) w->end[k] = w->off[w->pb[k]];
    w->n = np;
    return 0;
oom2:
    free(qa);
    free(qb);
oom:
    return kd_errf(err, "pre-tokenizer: out of memory splitting %zu bytes", n);
}

/* ---- the expressions, for tokenizer.json (data/kd_tokenizer_hf.c) --------------------------------------------- */

int kd_pretok_n_regex(const kd_pretok *p) { return p->n; }
const char *kd_pretok_regex(const kd_pretok *p, int i) { return i >= 0 && i < p->n ? p->t->re[i] : NULL; }

const char *kd_pretok_from_regex(const char *const *re, int n) {
    for (size_t t = 0; t < N_TYPES; t++) {
        int k = 0;
        while (k < MAX_RE && TYPES[t].re[k]) k++;
        if (k != n) continue;
        for (k = 0; k < n && !strcmp(re[k], TYPES[t].re[k]); k++) {}
        if (k < n) continue;
        for (size_t i = 0; i < N_NAMES; i++)
            if (!strcmp(NAMES[i].type, TYPES[t].type)) return NAMES[i].name;
    }
    return NULL;
}
