"""One script, run twice by test_sentence_transformers_parity.py: once on
sentence-transformers, once on Quiver imported under the same name. It saves every output it
computes, as NumPy arrays, for the test to compare.

    python st_script.py (st|quiver|quiver-f32) MODEL_DIR OUT.npz

`quiver` is Quiver as a drop-in user gets it (the machine's default number format);
`quiver-f32` names f32, the reference's numbers.
"""

import functools
import sys

import numpy as np

which, model_dir, out = sys.argv[1:4]
if which == "st":
    from sentence_transformers import SentenceTransformer
elif which == "quiver-f32":
    from quiver import Model

    SentenceTransformer = functools.partial(Model, quantize="f32")
else:
    from quiver import Model as SentenceTransformer

TEXTS = [
    "def add(a, b):\n    return a + b",
    "How do I read a JSON configuration file in Python?",
    "class LRUCache:\n    def __init__(self, capacity):\n        self.capacity = capacity\n"
    "        self.items = OrderedDict()",
    "fn parse_header(line: &str) -> Option<(&str, &str)> { line.split_once(':') }",
    "Retry a network call with exponential backoff and jitter.",
    "Überprüfe die Eingabe, bevor du sie speicherst: naïve café façade.",
    "import numpy as np\n" + "x = np.arange(10) * 2\n" * 120,  # longer than 256 tokens
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "短い日本語の文です。",
    "",
]
QUERIES = ["parse a json config", "exponential backoff", "least recently used cache"]

model = SentenceTransformer(model_dir, device="cpu")
results = {}


def keep(name, value):
    if type(value).__module__.startswith("torch"):
        results[name + ".type"] = np.array("tensor")
        value = value.detach().cpu().numpy()
    elif isinstance(value, list):
        results[name + ".type"] = np.array("list")
        value = np.stack([np.asarray(v) for v in value])
    else:
        results[name + ".type"] = np.array(type(value).__name__)
    results[name] = np.asarray(value)


keep("dimension", model.get_sentence_embedding_dimension())
keep("max_seq_length", model.max_seq_length)
keep("single", model.encode(TEXTS[0]))
keep("batch", model.encode(TEXTS, batch_size=4))
keep("normalized", model.encode(TEXTS, normalize_embeddings=True))
keep("prompt", model.encode(TEXTS, prompt="query: "))
keep("truncated", model.encode(TEXTS, truncate_dim=128))
keep("truncated_normalized", model.encode(TEXTS, truncate_dim=64, normalize_embeddings=True))
keep("query", model.encode_query(QUERIES))
keep("document", model.encode_document(TEXTS))
keep("as_list", model.encode(TEXTS[:3], convert_to_numpy=False))
keep("tensor", model.encode(TEXTS[:3], convert_to_tensor=True))
keep("similarity", model.similarity(model.encode(QUERIES), model.encode(TEXTS)))
keep("token_ids", model.tokenize(TEXTS)["input_ids"])
np.savez(out, **results)
