"""Side-by-side embedding throughput and accuracy: Quiver (CLI, and the Python package) against
sentence-transformers, ONNX Runtime and OpenVINO, at every number format.

    bench/run                      # sets everything up, then calls this
    python bench/compare.py --model models/all-MiniLM-L6-v2 --corpus C.jsonl --quiver target/release/quiver \
        --systems quiver,quiver:bf16,quiver:int8,st,ort,ort:int8,ov,ov:bf16,ov:int8

A system is `engine[:format]`: `quiver` (the CLI) and `py` (the Python package) in f32, bf16 or
int8; `st` (sentence-transformers, f32: the reference every cosine is taken against); `ort`
(ONNX Runtime) in f32 or int8 (`quantize_dynamic`, per-channel QInt8); `ov` (OpenVINO) in f32,
bf16 (`INFERENCE_PRECISION_HINT`) or int8 (NNCF static quantisation, calibrated on 100 chunks of
the standard library's tests, which the measured corpus leaves out).

Same model weights, same texts, same token cap, same thread count for every system. Each system
runs in its own process (so peak RSS is its own); each workload is measured `--runs` times after
a warm-up; the best and median tokens/s are printed with the mean and minimum cosine of its
vectors to sentence-transformers', then, per number format, Quiver's ratio to the fastest other
engine of that format, and Quiver's fraction of each format's product ceiling (another library's
matrix product on the model's shapes) measured in the same run.
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
FORMATS = ("f32", "bf16", "int8")


def workload_texts(corpus, how):
    texts = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
    if how == "first-line":
        return [t.strip().splitlines()[0][:120] for t in texts]
    return texts


def peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- workers (one per process)

def timed(run, texts):
    """(seconds, vectors) of `run(texts)` after a warm-up on the first 64 texts."""
    run(texts[:64])
    start = time.perf_counter()
    vectors = run(texts)
    return time.perf_counter() - start, vectors


def worker_quiver(args, texts, precision):
    """The CLI, timed by its own `--stats` (model load left out, as for the others)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "texts.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        vectors = os.path.join(scratch, "vectors.npy")
        command = [args.quiver, "--threads", str(args.threads), "embed", path, "--model", args.model,
                   "--max-length", str(args.max_length), "--batch-size", str(args.batch_size),
                   "--format", "npy", "--output", vectors, "--stats",
                   "--quantize", QUIVER_FORMATS[precision]]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        stats = json.loads(done.stderr.strip().splitlines()[-1])
        return stats["seconds"], np.load(vectors), stats["peak_rss_mib"]


def worker_py(args, texts, precision):
    """The Python package (`quiver.Model.encode`), in this process."""
    import quiver

    model = quiver.Model(args.model, quantize=QUIVER_FORMATS[precision], threads=args.threads,
                         max_seq_length=args.max_length)
    return timed(lambda batch: model.encode(batch, batch_size=args.batch_size), texts)


def worker_st(args, texts, precision):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model = SentenceTransformer(args.model, device="cpu")
    model.max_seq_length = args.max_length
    return timed(lambda batch: model.encode(batch, batch_size=args.batch_size), texts)


def pooled_vectors(args, texts, infer):
    """Mean-pooled, normalised vectors of `texts` in order, batched as sentence-transformers
    batches (length-sorted, padded per batch); `infer(feeds)` returns the last hidden states."""
    import numpy as np
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = [None] * len(texts)
    for start in range(0, len(order), args.batch_size):
        idx = order[start:start + args.batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                        max_length=args.max_length, return_tensors="np")
        hidden = infer(feeds_of(enc))
        mask = enc["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        for j, i in enumerate(idx):
            out[i] = pooled[j]
    return np.stack(out)


def feeds_of(enc):
    import numpy as np

    return {"input_ids": enc["input_ids"].astype(np.int64),
            "attention_mask": enc["attention_mask"].astype(np.int64),
            "token_type_ids": np.zeros_like(enc["input_ids"], dtype=np.int64)}


def worker_ort(args, texts, precision):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    path = args.onnx if precision == "f32" else ort_int8_path(args)
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    infer = lambda feeds: session.run(None, feeds)[0]
    return timed(lambda batch: pooled_vectors(args, batch, infer), texts)


def worker_ov(args, texts, precision):
    import openvino as ov

    core = ov.Core()
    path = ov_int8_path(args) if precision == "int8" else args.onnx
    config = {"INFERENCE_NUM_THREADS": args.threads, "NUM_STREAMS": 1,
              "PERFORMANCE_HINT": "LATENCY"}
    # OpenVINO runs bf16 by default on a CPU with AVX-512 BF16, so f32 must be asked for; the
    # int8 model keeps OpenVINO's default for the layers NNCF leaves in floating point.
    if precision in ("f32", "bf16"):
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(core.read_model(path), "CPU", config)
    request = compiled.create_infer_request()
    output = compiled.output(0)
    infer = lambda feeds: request.infer(feeds)[output]
    return timed(lambda batch: pooled_vectors(args, batch, infer), texts)


QUIVER_FORMATS = {"f32": "none", "bf16": "bf16", "int8": "int8"}
# Each engine's worker and the number formats it runs.
ENGINES = {
    "quiver": (worker_quiver, FORMATS),
    "py": (worker_py, FORMATS),
    "st": (worker_st, ("f32",)),
    "ort": (worker_ort, ("f32", "int8")),
    "ov": (worker_ov, FORMATS),
}
LABELS = {"quiver": "Quiver CLI", "py": "Quiver Python", "st": "sentence-transformers",
          "ort": "ONNX Runtime", "ov": "OpenVINO"}


def parse_system(spec):
    """`engine[:format]` as `engine:format`; an unknown engine or format is refused by name."""
    engine, _, precision = spec.partition(":")
    precision = {"": "f32", "none": "f32"}.get(precision, precision)
    if engine not in ENGINES:
        raise SystemExit(f"unknown system {spec!r}: engines are {', '.join(ENGINES)}")
    if precision not in ENGINES[engine][1]:
        raise SystemExit(f"{LABELS[engine]} has no {precision!r} format here: "
                         f"{', '.join(ENGINES[engine][1])}")
    return f"{engine}:{precision}"


def worker_main(args):
    import numpy as np

    texts = workload_texts(args.corpus, WORKLOADS[args.workload][1])
    engine, precision = args.worker.split(":")
    seconds, vectors, *rss = ENGINES[engine][0](args, texts, precision)
    np.save(args.vectors, np.asarray(vectors, dtype=np.float32))
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss[0] if rss else peak_rss_mib()}))


# ---------------------------------------------------------------- models the workers read

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


def ort_int8_path(args):
    return os.path.splitext(args.onnx)[0] + "-ort-int8.onnx"


def ov_int8_path(args):
    return os.path.splitext(args.onnx)[0] + "-ov-int8.xml"


def prepare_models(args, systems):
    """The ONNX export and the int8 models the systems read, made once beside it."""
    engines = {system.split(":")[0] for system in systems}
    if engines & {"ort", "ov"} and not os.path.exists(args.onnx):
        os.makedirs(os.path.dirname(args.onnx) or ".", exist_ok=True)
        export_onnx(args.model, args.onnx)
    if "ort:int8" in systems and not os.path.exists(ort_int8_path(args)):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(args.onnx, ort_int8_path(args), per_channel=True,
                         weight_type=QuantType.QInt8)
    if "ov:int8" in systems and not os.path.exists(ov_int8_path(args)):
        import nncf
        import openvino as ov
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        feeds = [feeds_of(tokenizer([text], truncation=True, max_length=args.max_length,
                                    return_tensors="np"))
                 for text in calibration_texts(100)]
        model = ov.Core().read_model(args.onnx)
        quantized = nncf.quantize(model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(feeds))
        ov.save_model(quantized, ov_int8_path(args))


def calibration_texts(count):
    """40-line windows of the standard library's test files: code like the corpus's, none of it
    measured (bench/make_corpus.py leaves tests out)."""
    import pathlib
    import sysconfig

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from make_corpus import chunks_of

    texts = []
    root = pathlib.Path(sysconfig.get_paths()["stdlib"]) / "test"
    for path in sorted(root.rglob("*.py")):
        for _, text in chunks_of(path, 40):
            texts.append(text)
            if len(texts) == count:
                return texts
    return texts


# ---------------------------------------------------------------- driver

def count_tokens(model_dir, texts, max_length):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return lengths


MODEL_SHAPES = [(4096, 384, 1536), (4096, 1536, 384), (4096, 384, 384)]


def best_rate(product, m, k, n):
    """GFLOP/s (GOP/s) of `product()`, an m x k by k x n product, best of 5 after a warm-up."""
    product()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / min(times) / 1e9


def product_ceilings(threads):
    """Each number format's machine peak, as the mean rate over the model's matrix shapes of
    another library's product: f32 numpy (OpenBLAS), bf16 torch (oneDNN, on AMX tiles where the
    CPU has them), int8 torch `_int_mm` (oneDNN). A format torch cannot run here is left out."""
    import numpy as np

    ceilings = {"f32": []}
    for m, k, n in MODEL_SHAPES:
        a = np.random.rand(m, k).astype(np.float32)
        b = np.random.rand(k, n).astype(np.float32)
        ceilings["f32"].append(best_rate(lambda: a @ b, m, k, n))
    try:
        import torch

        torch.set_num_threads(threads)
        ceilings["bf16"], ceilings["int8"] = [], []
        for m, k, n in MODEL_SHAPES:
            a, b = torch.randn(m, k).bfloat16(), torch.randn(k, n).bfloat16()
            ceilings["bf16"].append(best_rate(lambda: a @ b, m, k, n))
            a = torch.randint(-128, 128, (m, k), dtype=torch.int8)
            b = torch.randint(-128, 128, (k, n), dtype=torch.int8)
            ceilings["int8"].append(best_rate(lambda: torch._int_mm(a, b), m, k, n))
    except (ImportError, RuntimeError) as error:
        print(f"(no bf16/int8 ceiling: {error})")
    return {name: statistics.mean(rates) for name, rates in ceilings.items() if rates}


def flops_per_token(model_dir, lengths):
    config = json.load(open(os.path.join(model_dir, "config.json")))
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    linear = 2 * (4 * h * h + 2 * h * i)
    mean_context = sum(n * n for n in lengths) / sum(lengths)
    attention = 2 * 2 * mean_context * h
    return layers * (linear + attention)


def measure(args, system, workload, max_length, vectors):
    command = [sys.executable, __file__, "--worker", system, "--workload", workload,
               "--max-length", str(max_length), "--vectors", vectors] + args.passthrough
    results = []
    for _ in range(args.runs):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-2000:])
            raise SystemExit(f"{system} failed on {workload}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def cosines(vectors, reference):
    """Mean and minimum cosine of each row of one saved matrix to the same row of another."""
    import numpy as np

    a = np.load(vectors).astype(np.float64)
    b = np.load(reference).astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    each = (a * b).sum(1)
    return float(each.mean()), float(each.min())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--quiver", default="target/release/quiver")
    parser.add_argument("--onnx", default="bench/work/model.onnx")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--systems", default="quiver,st,ort",
                        help="engine[:format], comma-separated (see the module's doc)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--quantize", default=None,
                        help="the format of quiver and py when named without one (none, bf16, int8)")
    parser.add_argument("--worker", default=None)
    parser.add_argument("--workload", default=None)
    parser.add_argument("--vectors", default=None)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    args.passthrough = ["--model", args.model, "--corpus", args.corpus, "--quiver", args.quiver,
                        "--onnx", args.onnx, "--threads", str(args.threads),
                        "--batch-size", str(args.batch_size)]
    if args.worker:
        return worker_main(args)

    def named(spec):
        if args.quantize and spec in ("quiver", "py"):
            return f"{spec}:{args.quantize}"
        return spec

    systems = [parse_system(named(spec)) for spec in args.systems.split(",")]
    prepare_models(args, systems)
    ceilings = product_ceilings(args.threads)
    print(f"threads: {args.threads}   product ceilings on the model's shapes: "
          + ", ".join(f"{name} {rate:,.0f} GFLOP/s" for name, rate in ceilings.items())
          + " (f32 numpy/OpenBLAS; bf16 and int8 torch/oneDNN)")
    scratch = tempfile.mkdtemp(prefix="quiver-compare-")
    for workload in args.workloads.split(","):
        max_length, how = WORKLOADS[workload]
        texts = workload_texts(args.corpus, how)
        lengths = count_tokens(args.model, texts, max_length)
        tokens = sum(lengths)
        print(f"\n== {workload}: {len(texts)} texts, {tokens} tokens (cap {max_length})")
        print(f"{'system':<28} {'best tok/s':>10} {'median':>9} {'peak RSS':>10} "
              f"{'mean cos':>9} {'min cos':>8}")
        reference = os.path.join(scratch, f"{workload}-st.npy")
        # The reference vectors first, measured as a system only when one was asked for.
        if "st:f32" not in systems:
            measure(argparse.Namespace(**{**vars(args), "runs": 1}), "st:f32", workload,
                    max_length, reference)
        order = sorted(systems, key=lambda system: system != "st:f32")
        rates = {}
        for system in order:
            engine, precision = system.split(":")
            vectors = (reference if system == "st:f32"
                       else os.path.join(scratch, f"{workload}-{engine}-{precision}.npy"))
            runs = measure(args, system, workload, max_length, vectors)
            per_second = [tokens / r["seconds"] for r in runs]
            rates[system] = max(per_second)
            rss = max(r["peak_rss_mib"] for r in runs)
            mean, low = cosines(vectors, reference)
            print(f"{LABELS[engine] + ' ' + precision:<28} {max(per_second):>10,.0f} "
                  f"{statistics.median(per_second):>9,.0f} {rss:>6,.0f} MiB {mean:>9.5f} {low:>8.5f}")
        for precision in FORMATS:
            ours = rates.get(f"quiver:{precision}")
            others = {system: rate for system, rate in rates.items()
                      if system.endswith(":" + precision) and system.split(":")[0] not in ("quiver", "py")}
            if ours and others:
                best = max(others, key=others.get)
                print(f"{precision}: Quiver / fastest other ({LABELS[best.split(':')[0]]}) = "
                      f"{ours / others[best]:.2f}x")
        for precision in FORMATS:
            if f"quiver:{precision}" in rates and precision in ceilings:
                gflops = rates[f"quiver:{precision}"] * flops_per_token(args.model, lengths) / 1e9
                print(f"Quiver {precision}: {gflops:,.0f} GFLOP/s = "
                      f"{100 * gflops / ceilings[precision]:.0f} % of the {precision} ceiling")


if __name__ == "__main__":
    main()
