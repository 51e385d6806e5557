// load_and_generate.mjs — load a GGUF with llama.cpp (node-llama-cpp's prebuilt CPU
// binaries, never built from source), tokenize a test string and greedily
// generate tokens; print one JSON object on stdout.
//
// usage: node load_and_generate.mjs FILE.gguf [--text T] [--prompt P] [--n N]
//   tokenize:  ids of T as llama_tokenize gives them with add_special = false
//              (no BOS) and parse_special = false
//   generate:  BOS + ids(P), then N tokens, each the argmax (temperature 0, no
//              repeat penalty), flash attention off, F32 KV cache
// Exit status 0 with {"ok": true, ...}; 1 with {"ok": false, "error": ...}.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function parseArgs(argv) {
    const a = {file: null, text: "Once upon a time, a little robot dreamed of stars.", prompt: "The robot", n: 32};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        if (k === "--text") a.text = argv[++i];
        else if (k === "--prompt") a.prompt = argv[++i];
        else if (k === "--n") a.n = Number(argv[++i]);
        else if (a.file === null) a.file = k;
        else throw new Error(`unexpected argument '${k}'`);
    }
    if (a.file === null || !Number.isInteger(a.n) || a.n < 0)
        throw new Error("usage: node load_and_generate.mjs FILE.gguf [--text T] [--prompt P] [--n N]");
    return a;
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const log = [];
    const llama = await getLlama({
        gpu: false,
        build: "never",
        logLevel: LlamaLogLevel.warn,
        logger: (level, message) => { if (message.trim()) log.push(`${level}: ${message.trim()}`); },
    });
    const model = await llama.loadModel({modelPath: args.file, gpuLayers: 0});
    const tokenized = Array.from(model.tokenize(args.text, false));
    const promptIds = [];
    if (model.tokens.bos != null) promptIds.push(model.tokens.bos);
    promptIds.push(...model.tokenize(args.prompt, false));
    const context = await model.createContext({
        contextSize: Math.min(model.trainContextSize, 256),
        flashAttention: false,
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
        threads: 1,
    });
    const sequence = context.getSequence();
    const generated = [];
    if (args.n > 0) {
        for await (const token of sequence.evaluate(promptIds, {temperature: 0})) {
            generated.push(token);
            if (generated.length >= args.n) break;
        }
    }
    const out = {
        ok: true,
        file: args.file,
        llama_cpp_release: llama.llamaCppRelease?.release ?? null,
        train_context_size: model.trainContextSize,
        bos: model.tokens.bos ?? null,
        eos: model.tokens.eos ?? null,
        text: args.text,
        tokenize: tokenized,
        prompt: args.prompt,
        prompt_ids: promptIds,
        generated,
        generated_text: model.detokenize(generated),
        log,
    };
    await context.dispose();
    await model.dispose();
    await llama.dispose();
    process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ok: false, error: String(e && e.stack || e)}) + "\n");
    process.exit(1);
});
