// bench_llama.mjs — llama.cpp's prompt and decode speed on a GGUF (node-llama-cpp's
// prebuilt CPU binaries), for bench/bench_infer.c to compare kd's engine with.
//
// usage: node bench_llama.mjs FILE.gguf [--threads T] [--prompt P] [--gen N] [--reps R]
//   prompt: P token ids (BOS, then ids cycling through the vocabulary) evaluated in
//           one batch from an empty cache (controlledEvaluate, no sampling)
//   decode: then N tokens, each the argmax of the previous step (evaluate with
//           temperature 0), timed from the first generated token to the last
// Best of R repetitions each (the machine is shared). Flash attention off, F32 KV
// cache, as kd's engine. Prints one JSON object {"ok": true, "prompt_tps", "decode_tps", ...}.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

function parseArgs(argv) {
    const a = {file: null, threads: 2, prompt: 128, gen: 64, reps: 3};
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        if (k === "--threads") a.threads = Number(argv[++i]);
        else if (k === "--prompt") a.prompt = Number(argv[++i]);
        else if (k === "--gen") a.gen = Number(argv[++i]);
        else if (k === "--reps") a.reps = Number(argv[++i]);
        else if (a.file === null) a.file = k;
        else throw new Error(`unexpected argument '${k}'`);
    }
    if (a.file === null || ![a.threads, a.prompt, a.gen, a.reps].every((x) => Number.isInteger(x) && x > 0))
        throw new Error("usage: node bench_llama.mjs FILE.gguf [--threads T] [--prompt P] [--gen N] [--reps R]");
    return a;
}

async function main() {
    const args = parseArgs(process.argv.slice(2));
    const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
    const model = await llama.loadModel({modelPath: args.file, gpuLayers: 0, useMmap: true});
    const size = args.prompt + args.gen + 8;
    const context = await model.createContext({
        contextSize: size,
        batchSize: args.prompt,
        flashAttention: false,
        experimentalKvCacheKeyType: "F32",
        experimentalKvCacheValueType: "F32",
        threads: args.threads,
    });
    const sequence = context.getSequence();
    const prompt = [model.tokens.bos ?? 1];
    for (let i = 1; i < args.prompt; i++) prompt.push(3 + ((i * 37) % 509));   /* any vocabulary of >= 512 */
    let bestPrompt = Infinity, bestDecode = Infinity;
    for (let r = 0; r < args.reps; r++) {
        await sequence.clearHistory();
        const t0 = process.hrtime.bigint();
        await sequence.controlledEvaluate(prompt);
        const t1 = process.hrtime.bigint();
        bestPrompt = Math.min(bestPrompt, Number(t1 - t0) / 1e9);
        await sequence.clearHistory();
        await sequence.controlledEvaluate(prompt.slice(0, -1));
        let n = 0, tFirst = 0n, tLast = 0n;
        for await (const token of sequence.evaluate([prompt[prompt.length - 1]], {temperature: 0})) {
            void token;
            const t = process.hrtime.bigint();
            if (n === 0) tFirst = t;
            tLast = t;
            if (++n > args.gen) break;
        }
        bestDecode = Math.min(bestDecode, Number(tLast - tFirst) / 1e9 / args.gen);
    }
    const out = {ok: true, file: args.file, threads: args.threads, prompt_tokens: args.prompt, gen_tokens: args.gen,
                 prompt_tps: args.prompt / bestPrompt, decode_tps: 1 / bestDecode};
    await context.dispose();
    await model.dispose();
    await llama.dispose();
    process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((e) => {
    process.stdout.write(JSON.stringify({ok: false, error: String(e && e.stack || e)}) + "\n");
    process.exit(1);
});
