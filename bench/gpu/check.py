"""Quiver's GPU check (issue #20), run in one go on a lent GPU machine: parity, throughput and
peak device memory, against `transformers` and sentence-transformers on the same card.

    bench/gpu/run                   # here: builds the bundle and prints the device command
    python3 bench/gpu/check.py --bundle bench/work/gpu --out "$OUT"     # there

The machine has PyTorch, transformers and sentence-transformers but no network and no Rust
toolchain, so the bundle carries Quiver's stripped release binary (built with `--features
cuda-13`, the machines' CUDA), all-MiniLM-L6-v2's tokenizer files and 2,000 code chunks. Models
are built there with random weights from the real configs below (`transformers`, seeded), saved
in bf16 (the f32 reference then reads the same values), and shared by both engines; every model
reads the same tokenizer (WordPiece, 30,522 ids, below every config's vocabulary), so token
counts match across engines and architectures.

1. parity: per architecture, Quiver on the GPU against `transformers` on the same GPU at f32
   (mean pooling, 64 chunks): max abs diff and min cosine; then Quiver bf16 against the same
   f32 reference. Goals: cosine >= 0.9999 at f32, >= 0.999 at bf16.
2. throughput: an all-MiniLM-L6-v2-shaped and a Qwen2-1.5B-shaped (Qodo-Embed-1) model over
   2,000 chunks cut at 256 and at 2,048 tokens, and one 32k-token input: Quiver bf16 against
   sentence-transformers fp16 at its best batch size (tried on a sample), tokens/s, the ratio,
   and Quiver's fraction of the card's bf16 matrix-product rate measured in the same run. Goals:
   >= 2x sentence-transformers on both models; the 1.5B model at >= 40 % of the rate at 2,048.
3. peak device memory of each run (sentence-transformers: torch's peak allocation; Quiver:
   nvidia-smi's figure for its process, sampled every 50 ms).

Every measurement is written to OUT/results.json as it finishes, and a failure is recorded and
the next one run: a first run on a card tells what works. `--device cpu --quick` runs the same
script here on tiny models (CPU against CPU) to check the script itself.
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import numpy as np

# Real configs (config.json fields that shape the network), one per architecture with a GPU
# path, and the two throughput models. `layers` may be cut by --quick.
CONFIGS = {
    "bert": dict(  # sentence-transformers/all-MiniLM-L6-v2
        model_type="bert", architectures=["BertModel"], vocab_size=30522, hidden_size=384,
        num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, hidden_act="gelu",
        max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
    ),
    "roberta": dict(  # microsoft/codebert-base
        model_type="roberta", architectures=["RobertaModel"], vocab_size=50265, hidden_size=768,
        num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
        max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
    ),
    "xlm-roberta": dict(  # intfloat/multilingual-e5-base
        model_type="xlm-roberta", architectures=["XLMRobertaModel"], vocab_size=250002,
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5,
        pad_token_id=1,
    ),
    "mpnet": dict(  # sentence-transformers/all-mpnet-base-v2
        model_type="mpnet", architectures=["MPNetModel"], vocab_size=30527, hidden_size=768,
        num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
        max_position_embeddings=514, relative_attention_num_buckets=32, layer_norm_eps=1e-5,
        pad_token_id=1,
    ),
    "nomic_bert": dict(  # nomic-ai/nomic-embed-text-v1.5, transformers' port
        model_type="nomic_bert", architectures=["NomicBertModel"], vocab_size=30528,
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="silu", max_position_embeddings=8192, type_vocab_size=2, layer_norm_eps=1e-12,
        rotary_emb_base=1000, pad_token_id=0,
    ),
    "qwen2": dict(  # Qodo/Qodo-Embed-1-1.5B (gte-Qwen2-1.5B-instruct's shape)
        model_type="qwen2", architectures=["Qwen2Model"], vocab_size=151646, hidden_size=1536,
        num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, hidden_act="silu", max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1000000.0, is_causal=False, tie_word_embeddings=False,
    ),
    "qwen3": dict(  # Qwen/Qwen3-Embedding-0.6B
        model_type="qwen3", architectures=["Qwen3Model"], vocab_size=151669, hidden_size=1024,
        num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        intermediate_size=3072, hidden_act="silu", max_position_embeddings=32768,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
    ),
    "modernbert": dict(  # Alibaba-NLP/gte-modernbert-base, as transformers 5 writes it
        model_type="modernbert", architectures=["ModernBertModel"], vocab_size=50368,
        hidden_size=768, num_hidden_layers=22, num_attention_heads=12, intermediate_size=1152,
        hidden_activation="gelu", max_position_embeddings=8192, global_attn_every_n_layers=3,
        local_attention=128, norm_eps=1e-5, norm_bias=False, pad_token_id=50283,
        layer_types=["full_attention" if i % 3 == 0 else "sliding_attention" for i in range(22)],
        rope_parameters={"full_attention": {"rope_theta": 160000.0, "rope_type": "default"},
                         "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"}},
    ),
    "gemma3_text": dict(  # google/embeddinggemma-300m
        model_type="gemma3_text", architectures=["Gemma3TextModel"], vocab_size=262144,
        hidden_size=768, num_hidden_layers=24, num_attention_heads=3, num_key_value_heads=1,
        head_dim=256, intermediate_size=1152, hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=2048, query_pre_attn_scalar=256, rms_norm_eps=1e-6,
        rope_theta=1000000.0, rope_local_base_freq=10000.0, sliding_window=512,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 4,
        use_bidirectional_attention=True,
    ),
}
# Architectures whose reference needs code from outside transformers (jina-embeddings-v3's
# modelling code lives on the hub): reported, not measured here; the load check compares its
# GPU path with the CPU's at every load.
NO_REFERENCE = {"jina_embeddings_v3": "its modelling code is not in transformers"}
THROUGHPUT_MODELS = ("bert", "qwen2")


def log(*parts):
    print(*parts, flush=True)


class Results:
    """results.json, rewritten after every measurement."""

    def __init__(self, out):
        self.path = pathlib.Path(out) / "results.json"
        self.data = {"parity": {}, "throughput": {}, "errors": []}

    def set(self, section, key, value):
        self.data[section][key] = value
        self.save()

    def error(self, what, error):
        self.data["errors"].append({"what": what, "error": f"{type(error).__name__}: {error}"[-2000:]})
        log(f"FAILED {what}: {error}")
        self.save()

    def save(self):
        self.path.write_text(json.dumps(self.data, indent=1))


def quick_config(config):
    """A tiny model of the same architecture, for a dry run of this script on a CPU."""
    small = dict(config)
    heads = 4
    small.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=128)
    if "num_key_value_heads" in small:
        small["num_key_value_heads"] = 2
    if "head_dim" in small:
        small["head_dim"] = 16
    if small["model_type"] == "gemma3_text":
        small["query_pre_attn_scalar"] = 16
        small["sliding_window"] = 9
    if small["model_type"] == "modernbert":
        small["local_attention"] = 16
        small["global_attn_every_n_layers"] = 2
    if "layer_types" in small:
        small["layer_types"] = ["sliding_attention", "full_attention"]
    return small


def build_model(name, config, folder, tokenizer_dir, device, torch, transformers):
    """A random-weight model folder from `config`: bf16 safetensors, MiniLM's tokenizer, and
    sentence-transformers modules with mean pooling and no normalisation."""
    if (folder / "model.safetensors").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    fields = {key: value for key, value in config.items() if key != "model_type"}
    model_config = transformers.AutoConfig.for_model(config["model_type"], **fields)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModel.from_config(model_config, dtype=torch.float32)
    # Weights that move every part of the network (as make_tiny.py's): norms off 1, biases
    # off 0, the rest at the models' usual initial scale.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                parameter.copy_(1.0 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.normal_(0.0, 0.02)
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    for file in tokenizer_dir.iterdir():
        if file.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(file, folder / file.name)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config["hidden_size"], "pooling_mode_mean_tokens": True,
    }))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    del model


def folder_tokenizer(folder, transformers):
    """The folder's tokenizer.json as Quiver reads it. Not `AutoTokenizer`: transformers 5 picks
    the tokenizer class by the model type (a Qwen2 folder gets Qwen2's, which splits this
    WordPiece vocabulary's text into characters)."""
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(pathlib.Path(folder) / "tokenizer.json"), pad_token="[PAD]")


def quiver_env(args):
    """Quiver finds cuBLAS, NVRTC and the driver through LD_LIBRARY_PATH: the CUDA libraries
    PyTorch's wheels carry, then the system's."""
    env = dict(os.environ)
    folders = []
    try:
        import nvidia

        for base in nvidia.__path__:
            folders += sorted(str(p) for p in pathlib.Path(base).glob("**/lib") if p.is_dir())
    except ImportError:
        pass
    folders += ["/usr/local/cuda/lib64", "/usr/local/nvidia/lib64"]
    env["LD_LIBRARY_PATH"] = ":".join(folders + [env.get("LD_LIBRARY_PATH", "")])
    return env


class DeviceMemory:
    """The most GPU memory a process held, sampled from nvidia-smi every 50 ms (MiB)."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        while self.running:
            try:
                lines = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5).stdout.splitlines()
                for line in lines:
                    pid, used = (field.strip() for field in line.split(","))
                    if int(pid) == self.pid:
                        self.peak = max(self.peak, int(used))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def run_quiver(args, folder, texts, precision, max_length, batch_tokens=65536):
    """(vectors, stats) of `quiver embed` on the device: stats are its own `--stats` (model
    load left out) plus the peak device memory."""
    scratch = pathlib.Path(args.out) / "scratch"
    scratch.mkdir(exist_ok=True)
    inputs, vectors = scratch / "texts.jsonl", scratch / "vectors.npy"
    with open(inputs, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}) + "\n")
    command = [args.quiver, "embed", str(inputs), "--model", str(folder), "--device", args.device,
               "--quantize", {"f32": "none", "bf16": "bf16"}[precision],
               "--max-length", str(max_length), "--batch-size", "4096",
               "--max-batch-tokens", str(batch_tokens), "--format", "npy", "--output", str(vectors),
               "--stats"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=quiver_env(args))
    memory = DeviceMemory(process.pid) if args.device != "cpu" else None
    stdout, stderr = process.communicate(timeout=args.timeout)
    peak = memory.stop() if memory else None
    if process.returncode != 0:
        raise RuntimeError(f"quiver exited {process.returncode}: {stderr.strip()[-1500:]}")
    stats = json.loads(stderr.strip().splitlines()[-1])
    stats["peak_device_mib"] = peak
    return np.load(vectors), stats


def reference_vectors(folder, config, texts, max_length, device, torch, transformers):
    """`transformers` at f32 on the same device, mean-pooled as the folder's modules say."""
    tokenizer = folder_tokenizer(folder, transformers)
    model = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).to(device).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            batch = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt").to(device)
            inputs = {"input_ids": batch["input_ids"]}
            if config.get("is_causal") is False:
                # As make_tiny.py: an explicit all-visible mask, whatever this transformers
                # version makes of `is_causal`.
                n = batch["input_ids"].shape[1]
                inputs["attention_mask"] = torch.zeros(1, 1, n, n, device=device)
            hidden = model(**inputs).last_hidden_state[0]
            out.append(hidden.mean(dim=0).float().cpu().numpy())
    del model
    return np.stack(out)


def compare(ours, reference):
    cosines = (ours * reference).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
    return {"max_abs_diff": float(np.abs(ours - reference).max()), "min_cosine": float(cosines.min())}


def parity(args, results, texts, torch, transformers):
    for name, config in CONFIGS.items():
        config = quick_config(config) if args.quick else config
        folder = pathlib.Path(args.models) / name
        try:
            build_model(name, config, folder, args.tokenizer, args.torch_device, torch, transformers)
            reference = reference_vectors(folder, config, texts, 256, args.torch_device, torch,
                                          transformers)
            row = {}
            for precision in ("f32", "bf16"):
                ours, _ = run_quiver(args, folder, texts, precision, 256)
                row[precision] = compare(ours, reference)
            goals = row["f32"]["min_cosine"] >= 0.9999 and row["bf16"]["min_cosine"] >= 0.999
            row["goals_met"] = bool(goals)
            log(f"parity {name}: {row}")
            results.set("parity", name, row)
        except Exception as error:  # noqa: BLE001 - record and go on to the next
            results.error(f"parity {name}", error)
        finally:
            if not args.keep_models and name not in THROUGHPUT_MODELS:
                shutil.rmtree(folder, ignore_errors=True)
    for name, why in NO_REFERENCE.items():
        results.set("parity", name, {"not_measured": why})


def matmul_rate(torch, device):
    """The card's bf16 matrix-product rate on 8192³ random products (TFLOP/s), as KINDS.md
    measures it: the ceiling Quiver's fraction is taken of."""
    if device == "cpu":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - start) / 1e12


def flops_per_token(config, mean_length):
    """Matrix-product FLOPs per token: 2 x the layers' dense weights, plus attention's two
    products over the mean sequence length."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim", h // heads)
    kv = config.get("num_key_value_heads", heads)
    inner = config["intermediate_size"]
    gated = config["model_type"] in ("qwen2", "qwen3", "gemma3_text", "modernbert", "nomic_bert")
    dense = h * (heads + 2 * kv) * head_dim + heads * head_dim * h + h * inner * (3 if gated else 2)
    attention = 2 * heads * head_dim * mean_length
    return 2 * layers * (dense + attention)


def st_throughput(folder, texts, max_length, device, torch, transformers, sentence_transformers,
                  batch_sizes):
    """sentence-transformers fp16 at its best batch size (tried on a sample): seconds, tokens/s
    is computed by the caller from Quiver's token count."""
    model = sentence_transformers.SentenceTransformer(str(folder), device=device)
    model[0].processor = folder_tokenizer(folder, transformers)  # see folder_tokenizer
    model.max_seq_length = max_length
    if device != "cpu":
        model.half()
    sample = texts[: min(len(texts), 256)]
    best = None
    for size in batch_sizes:
        try:
            start = time.perf_counter()
            model.encode(sample, batch_size=size)
            if device != "cpu":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if best is None or elapsed < best[1]:
                best = (size, elapsed)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
    size = best[0]
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model.encode(texts, batch_size=size)
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else None
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    return {"seconds": seconds, "batch_size": size, "peak_device_mib": peak}


def long_texts(chunks, tokenizer, length, count):
    """`count` texts of about `length` tokens, each joined from consecutive chunks."""
    out, current, tokens = [], [], 0
    for chunk in chunks * (1 + length * count // max(1, len(chunks) * 200)):
        current.append(chunk)
        tokens += len(tokenizer(chunk, add_special_tokens=False)["input_ids"])
        if tokens >= length:
            out.append("\n".join(current))
            current, tokens = [], 0
            if len(out) == count:
                break
    return out


def throughput(args, results, chunks, torch, transformers, sentence_transformers):
    rate = matmul_rate(torch, args.torch_device)
    results.set("throughput", "bf16_matmul_tflops", rate)
    tokenizer = folder_tokenizer(args.tokenizer, transformers)
    count = len(chunks)
    workloads = [("bert", 256, chunks, (64, 128, 256, 512)),
                 ("qwen2", 256, chunks, (32, 64, 128, 256)),
                 ("qwen2", 2048, long_texts(chunks, tokenizer, 2048, count), (4, 8, 16, 32)),
                 ("qwen2", 32768, long_texts(chunks, tokenizer, 32768, 1), (1,))]
    if args.quick:
        workloads = [(m, min(n, 256), t[:64], b[:2]) for m, n, t, b in workloads[:3]]
    for name, length, texts, batch_sizes in workloads:
        key = f"{name}@{length}x{len(texts)}"
        config = quick_config(CONFIGS[name]) if args.quick else CONFIGS[name]
        folder = pathlib.Path(args.models) / name
        try:
            build_model(name, config, folder, args.tokenizer, args.torch_device, torch, transformers)
            ours, stats = run_quiver(args, folder, texts, "bf16", length)
            theirs = st_throughput(folder, texts, length, args.torch_device, torch, transformers,
                                   sentence_transformers, batch_sizes)
            tokens = stats["tokens"]
            row = {
                "tokens": tokens,
                "quiver_tokens_per_s": tokens / stats["seconds"],
                "st_tokens_per_s": tokens / theirs["seconds"],
                "st_batch_size": theirs["batch_size"],
                "quiver_peak_device_mib": stats["peak_device_mib"],
                "st_peak_device_mib": theirs["peak_device_mib"],
            }
            row["ratio"] = row["quiver_tokens_per_s"] / row["st_tokens_per_s"]
            if rate:
                flops = flops_per_token(config, tokens / len(texts))
                row["quiver_fraction_of_bf16_rate"] = row["quiver_tokens_per_s"] * flops / (rate * 1e12)
            log(f"throughput {key}: {row}")
            results.set("throughput", key, row)
        except Exception as error:  # noqa: BLE001 - record and go on to the next
            results.error(f"throughput {key}", error)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="bench/work/gpu", help="what bench/gpu/run prepared")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/work/gpu-results"))
    parser.add_argument("--device", default="cuda", help="Quiver's --device (cpu for a dry run)")
    parser.add_argument("--sections", default="parity,throughput")
    parser.add_argument("--quick", action="store_true", help="tiny models, 64 chunks: checks the script")
    parser.add_argument("--keep-models", action="store_true")
    parser.add_argument("--timeout", type=int, default=900, help="seconds for one quiver run")
    args = parser.parse_args()
    bundle = pathlib.Path(args.bundle)
    args.quiver = str(bundle / "quiver")
    args.tokenizer = bundle / "tokenizer"
    args.models = pathlib.Path(args.out) / "models"
    args.models.mkdir(parents=True, exist_ok=True)
    args.torch_device = "cpu" if args.device == "cpu" else "cuda"

    import sentence_transformers
    import torch
    import transformers

    results = Results(args.out)
    results.data["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__,
                                "sentence_transformers": sentence_transformers.__version__}
    if args.torch_device == "cuda":
        results.data["device"] = torch.cuda.get_device_name(0)
    chunks = [json.loads(line)["text"] for line in open(bundle / "corpus.jsonl", encoding="utf-8")]
    if args.quick:
        chunks = chunks[:64]
    sections = args.sections.split(",")
    if "parity" in sections:
        parity(args, results, chunks[:64], torch, transformers)
    if "throughput" in sections:
        throughput(args, results, chunks, torch, transformers, sentence_transformers)
    shutil.rmtree(args.models, ignore_errors=True)
    shutil.rmtree(pathlib.Path(args.out) / "scratch", ignore_errors=True)
    log(json.dumps(results.data, indent=1))
    return 1 if results.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
