// tokenize_vocab.mjs — llama.cpp's token ids for texts, with the vocabulary of
// one or more vocab-only GGUF files (tests/test_pretok.c, tools/vocab_fixtures.py):
// node-llama-cpp's prebuilt CPU binaries load each file with vocabOnly and
// tokenize every text with add_special = false, parse_special = false (as
// llama.cpp's test-tokenizer-0 does).
//
// usage: node tokenize_vocab.mjs TEXTS.json FILE.gguf [FILE.gguf ...]
// Prints one JSON object: {"ok": true, "llama_cpp_release": ..., "ids": {FILE: [[...], ...], ...},
// "errors": {FILE: message}}; a file llama.cpp refuses is listed under errors.
import {readFileSync} from "node:fs";
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

async function main() {
    const argv = process.argv.slice(2);
    if (argv.length < 2) throw new Error("usage: node tokenize_vocab.mjs TEXTS.json FILE.gguf [FILE.gguf ...]");
    const texts = JSON.parse(readFileSync(argv[0], "utf8"));
    const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, logger: () => {}});
    const ids = {}, errors = {};
    for (const file of argv.slice(1)) {
        try {
            const model = await llama.loadModel({modelPath: file, gpuLayers: 0, vocabOnly: true});
            ids[file] = texts.map((t) => Array.from(model.tokenize(t, false)));
            await model.dispose();
        } catch (e) {
            errors[file] = String(e && e.message || e);
        }
    }
    const out = {ok: true, llama_cpp_release: llama.llamaCppRelease?.release ?? null, ids, errors};
    await llama.dispose();
    process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ok: false, error: String(e && e.stack || e)}) + "\n");
    process.exit(1);
});
