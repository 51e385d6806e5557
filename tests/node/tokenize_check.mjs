// tokenize_check.mjs — llama.cpp's tokenization of strings with a GGUF's own
// tokenizer (tests/test_bpe_vocab.c): node-llama-cpp's prebuilt CPU binaries,
// never built from source.
//
// usage: node tokenize_check.mjs FILE.gguf STRINGS.json [--n N]
//   for each string: llama_tokenize with add_special = false, parse_special =
//   false, and the detokenized text of those ids; then, with --n, N greedy
//   tokens after the first string's ids (the model loads and runs)
// Prints one JSON object: {"ok": true, "tokenize": [[...], ...], "detokenize":
// [...], "generated": [...]}; {"ok": false, "error": ...} and exit status 1 on failure.
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

async function main() {
    const argv = process.argv.slice(2);
    if (argv.length < 2) throw new Error("usage: node tokenize_check.mjs FILE.gguf STRINGS.json [--n N]");
    const n = argv[2] === "--n" ? Number(argv[3]) : 0;
    const strings = JSON.parse(readFileSync(argv[1], "utf8"));
    const log = [];
    const llama = await getLlama({
        gpu: false,
        build: "never",
        logLevel: LlamaLogLevel.warn,
        logger: (level, message) => { if (message.trim()) log.push(`${level}: ${message.trim()}`); },
    });
    const model = await llama.loadModel({modelPath: argv[0], gpuLayers: 0});
    const tokenize = strings.map((s) => Array.from(model.tokenize(s, false)));
    const detokenize = tokenize.map((ids) => model.detokenize(ids));
    const generated = [];
    if (n > 0) {
        const context = await model.createContext({contextSize: 64, flashAttention: false, threads: 1});
        const sequence = context.getSequence();
        for await (const token of sequence.evaluate(tokenize[0], {temperature: 0})) {
            generated.push(token);
            if (generated.length >= n) break;
        }
        await context.dispose();
    }
    const out = {ok: true, llama_cpp_release: llama.llamaCppRelease?.release ?? null, bos: model.tokens.bos ?? null,
                 eos: model.tokens.eos ?? null, tokenize, detokenize, generated, log};
    await model.dispose();
    await llama.dispose();
    process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ok: false, error: String(e && e.stack || e)}) + "\n");
    process.exit(1);
});
