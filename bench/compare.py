"""Side-by-side embedding throughput: Quiver (CLI, and the Python package with `--systems
quiver,py,...`) vs sentence-transformers vs ONNX Runtime.

    bench/run                      # sets everything up, then calls this
    python bench/compare.py --model models/all-MiniLM-L6-v2 --corpus C.jsonl --quiver target/release/quiver

Same model weights, same texts, same token cap, same thread count for every system. Each system
runs in its own process (so peak RSS is its own); each workload is measured `--runs` times after
a warm-up and the best and median are printed, with ratios to Quiver and Quiver's fraction of an
SGEMM ceiling measured in the same run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WORKLOADS = {
    # name: (max tokens, how to cut each corpus text)
    "code-256": (256, "whole"),
    "query-32": (32, "first-line"),
    "long-512": (512, "whole"),
}


def workload_texts(corpus, how):
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    if how == "first-line":
        return [t.strip().splitlines()[0][:120] for t in texts]
    return texts


def peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers (one per process)

def worker_st(args, texts):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    model.encode(texts[:64], batch_size=args.batch_size)
    start = time.perf_counter()
    model.encode(texts, batch_size=args.batch_size)
    return time.perf_counter() - start


def export_onnx(model_dir, path):
    import torch
    from transformers import AutoModel

    class HiddenStates(torch.nn.Module):
        # Keyword arguments only: the tracer's positional call does not fit transformers 5.
        def __init__(self):
            super().__init__()
            self.inner = AutoModel.from_pretrained(model_dir).eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    model = HiddenStates().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            path,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )


def worker_ort(args, texts):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def run(batch_texts):
        # Length-sorted batches, as sentence-transformers does, padded per batch.
        order = sorted(range(len(batch_texts)), key=lambda i: -len(batch_texts[i]))
        out = [None] * len(batch_texts)
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            enc = tokenizer([batch_texts[i] for i in idx], padding=True, truncation=True,
                            max_length=args.max_length, return_tensors="np")
            feeds = {"input_ids": enc["input_ids"].astype(np.int64),
                     "attention_mask": enc["attention_mask"].astype(np.int64),
                     "token_type_ids": np.zeros_like(enc["input_ids"], dtype=np.int64)}
            hidden = session.run(None, feeds)[0]
            mask = enc["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            for j, i in enumerate(idx):
                out[i] = pooled[j]
        return out

    run(texts[:64])
    start = time.perf_counter()
    run(texts)
    return time.perf_counter() - start


def worker_quiver(args, texts):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
        path = f.name
    command = [args.quiver, "--threads", str(args.threads), "embed", path, "--model", args.model,
               "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
               "--output", "/dev/null", "--stats"]
    if args.quantize:
        command += ["--quantize", args.quantize]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    os.unlink(path)
    stats = json.loads(done.stderr.strip().splitlines()[-1])
    return stats["seconds"], stats["peak_rss_mib"]


def worker_py(args, texts):
    """The Python package (`quiver.Model.encode`), in this process."""
    import quiver

    model = quiver.Model(args.model, quantize=args.quantize, threads=args.threads,
                         max_seq_length=args.max_length)
    model.encode(texts[:64], batch_size=args.batch_size)
    start = time.perf_counter()
    model.encode(texts, batch_size=args.batch_size)
    return time.perf_counter() - start


def worker_main(args):
    texts = workload_texts(args.corpus, WORKLOADS[args.workload][1])
    if args.worker == "quiver":
        seconds, rss = worker_quiver(args, texts)
    else:
        seconds = {"st": worker_st, "ort": worker_ort, "py": worker_py}[args.worker](args, texts)
        rss = peak_rss_mib()
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss}))


# ---------------------------------------------------------------- driver

def count_tokens(model_dir, texts, max_length):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return lengths


def sgemm_ceiling(threads):
    """GFLOP/s of numpy (OpenBLAS) on the model's matrix shapes, best of 5."""
    import numpy as np

    shapes = [(4096, 384, 1536), (4096, 1536, 384), (4096, 384, 384)]
    best = []
    for m, k, n in shapes:
        a = np.random.rand(m, k).astype(np.float32)
        b = np.random.rand(k, n).astype(np.float32)
        a @ b
        times = []
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        best.append(2 * m * k * n / min(times) / 1e9)
    return statistics.mean(best)


def flops_per_token(model_dir, lengths):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    linear = 2 * (4 * h * h + 2 * h * i)
    mean_context = sum(n * n for n in lengths) / sum(lengths)
    attention = 2 * 2 * mean_context * h
    return layers * (linear + attention)


def measure(args, system, workload, max_length):
    command = [sys.executable, __file__, "--worker", system, "--workload", workload,
               "--max-length", str(max_length)] + args.passthrough
    results = []
    for _ in range(args.runs):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-2000:])
            raise SystemExit(f"{system} failed on {workload}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--quiver", default="target/release/quiver")
    parser.add_argument("--onnx", default="bench/work/model.onnx")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--systems", default="quiver,st,ort")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--quantize", default=None, help="passed to quiver --quantize")
    parser.add_argument("--worker", default=None)
    parser.add_argument("--workload", default=None)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    args.passthrough = ["--model", args.model, "--corpus", args.corpus, "--quiver", args.quiver,
                        "--onnx", args.onnx, "--threads", str(args.threads),
                        "--batch-size", str(args.batch_size)]
    if args.quantize:
        args.passthrough += ["--quantize", args.quantize]
    if args.worker:
        return worker_main(args)

    systems = args.systems.split(",")
    if "ort" in systems and not os.path.exists(args.onnx):
        os.makedirs(os.path.dirname(args.onnx), exist_ok=True)
        export_onnx(args.model, args.onnx)
    ceiling = sgemm_ceiling(args.threads)
    print(f"threads: {args.threads}   SGEMM ceiling (numpy/OpenBLAS, model shapes): {ceiling:.0f} GFLOP/s")
    quantized = f" ({args.quantize})" if args.quantize else ""
    label = {"quiver": "Quiver CLI" + quantized, "py": "Quiver Python" + quantized,
             "st": "sentence-transformers", "ort": "ONNX Runtime fp32"}
    for workload in args.workloads.split(","):
        max_length, how = WORKLOADS[workload]
        texts = workload_texts(args.corpus, how)
        lengths = count_tokens(args.model, texts, max_length)
        tokens = sum(lengths)
        print(f"\n== {workload}: {len(texts)} texts, {tokens} tokens (cap {max_length})")
        rates = {}
        for system in systems:
            runs = measure(args, system, workload, max_length)
            per_second = [tokens / r["seconds"] for r in runs]
            rates[system] = max(per_second)
            rss = max(r["peak_rss_mib"] for r in runs)
            print(f"{label[system]:<24} best {max(per_second):>9,.0f} tok/s  median {statistics.median(per_second):>9,.0f}  peak RSS {rss:,.0f} MiB")
        if "quiver" in rates:
            for other in [s for s in systems if s != "quiver"]:
                print(f"ratio Quiver / {label[other]}: {rates['quiver'] / rates[other]:.2f}x")
            gflops = rates["quiver"] * flops_per_token(args.model, lengths) / 1e9
            print(f"Quiver: {gflops:.0f} GFLOP/s = {100 * gflops / ceiling:.0f} % of the SGEMM ceiling")


if __name__ == "__main__":
    main()
