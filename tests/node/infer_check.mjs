// infer_check.mjs — llama.cpp's view of a GGUF, for comparing kd's inference
// engine with it token by token (tests/test_infer.c). node-llama-cpp's prebuilt
// CPU binaries (never built from source), flash attention off, F32 KV cache.
//
// usage: node infer_check.mjs FILE.gguf --prompt "ID ID ..." [--n N] [--forced "ID ID ..."] [--threads T]
//   greedy:  evaluate the prompt ids (give the BOS yourself), then N tokens, each
//            the argmax (temperature 0, no penalties); stops early at EOS
//   forced:  evaluate the forced ids from an empty cache (teacher forcing) and,
//            after each position t < len−1, report log p(forced[t+1]) as llama.cpp's
//            sampler gives it at temperature 1 with every filter off (top-k 0,
//            top-p 1, min-p 0), plus the argmax of that distribution
// Prints one JSON object: {"ok": true, "generated": [...], "forced_logprobs": [...],
// "forced_argmax": [...]}; {"ok": false, "error": ...} and exit status 1 on failure.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function ids(s) {
    return s.trim() === "" ? [] : s.trim().split(/[\s,]+/).map(Number);
}

function parseArgs(argv) {
    const a = {file: null, prompt: [], n: 32, forced: [], threads: 1};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        if (k === "--prompt") a.prompt = ids(argv[++i]);
        else if (k === "--forced") a.forced = ids(argv[++i]);
        else if (k === "--n") a.n = Number(argv[++i]);
        else if (k === "--threads") a.threads = Number(argv[++i]);
        else if (a.file === null) a.file = k;
        else throw new Error(`unexpected argument '${k}'`);
    }
    if (a.file === null || !Number.isInteger(a.n) || a.n < 0 || [...a.prompt, ...a.forced].some((x) => !Number.isInteger(x)))
        throw new Error("usage: node infer_check.mjs FILE.gguf --prompt IDS [--n N] [--forced IDS] [--threads T]");
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
    const ctxSize = Math.max(args.prompt.length + args.n, args.forced.length, 8);
    const context = await model.createContext({
        contextSize: ctxSize,
        batchSize: ctxSize,
        flashAttention: false,
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
        threads: args.threads,
    });
    const out = {ok: true, file: args.file, eos: model.tokens.eos ?? null, generated: [], forced_logprobs: [],
                 forced_argmax: [], log};
    const sequence = context.getSequence();
    if (args.n > 0 && args.prompt.length > 0) {
        for await (const token of sequence.evaluate(args.prompt, {temperature: 0})) {
            if (token === model.tokens.eos) break;
            out.generated.push(token);
            if (out.generated.length >= args.n) break;
        }
    }
    if (args.forced.length > 1) {
        await sequence.clearHistory();
        const opts = {temperature: 1, topK: 0, topP: 1, minP: 0};
        const input = args.forced.map((t, i) =>
            i < args.forced.length - 1 ? [t, {generateNext: {probabilities: true, options: opts}}] : t);
        const res = await sequence.controlledEvaluate(input);
        for (let i = 0; i < args.forced.length - 1; i++) {
            const probs = res[i].next.probabilities;
            const p = probs.get(args.forced[i + 1]) ?? 0;
            out.forced_logprobs.push(Math.log(p));
            out.forced_argmax.push(probs.entries().next().value[0]);
        }
    }
    await context.dispose();
    await model.dispose();
    await llama.dispose();
    process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ok: false, error: String(e && e.stack || e)}) + "\n");
    process.exit(1);
});
