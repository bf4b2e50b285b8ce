"""`quiver serve` as a drop-in for Hugging Face text-embeddings-inference (TEI).

Three clients: schemathesis, which generates requests from TEI's published OpenAPI document
(tests/tei/openapi.json, pinned with its source in tests/tei/SOURCE.md) for every route Quiver
serves under TEI's name and checks each answer against the document (no 5xx, documented status
codes and content types, schema-valid bodies, schema-invalid requests refused, schema-valid
ones accepted: see tei_checks.py); `huggingface_hub`'s `InferenceClient`; and LangChain's
`HuggingFaceEndpointEmbeddings`. Run by scripts/test in .venv-clients; QUIVER_BIN names the
binary (default target/debug/quiver) and QUIVER_TEST_MODELS the models folder.
"""

import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import unittest

import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("QUIVER_BIN", str(ROOT / "target" / "debug" / "quiver"))
MODEL = pathlib.Path(os.environ.get("QUIVER_TEST_MODELS", ROOT / "models")) / "all-MiniLM-L6-v2"
CONTRACT = ROOT / "tests" / "tei" / "openapi.json"
# Tiny random-weight models built by transformers (quiver-embed's fixtures): a cross-encoder
# for /rerank and a SPLADE encoder for /embed_sparse.
TINY = ROOT / "crates" / "quiver-embed" / "tests" / "fixtures" / "tiny"
RERANKER = TINY / "bert-reranker"
SPLADE = TINY / "splade"

# TEI's routes Quiver serves, on the dense model's server (with the cross-encoder beside it) and
# on the SPLADE model's; /predict needs a multi-label classifier, which Quiver does not run.
SERVED = ["/embed", "/embed_all", "/decode", "/similarity", "/tokenize", "/rerank", "/info",
          "/health", "/metrics", "/v1/embeddings"]
SERVED_SPARSE = ["/embed_sparse", "/embed", "/info"]

# OpenAI's error body: what /v1/embeddings answers instead of TEI's `OpenAICompatErrorResponse`,
# because the official OpenAI clients read that shape (docs/server.md says so).
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"}},
        }
    },
}


def quiver_contract():
    """TEI's document with Quiver's deliberate differences written in (docs/server.md lists
    them): /v1/embeddings answers errors in OpenAI's shape, and a malformed request with
    OpenAI's 400; /similarity's `parameters` may leave out `truncation_direction`, as
    huggingface_hub sends them (`"parameters": {}`) and TEI's own server accepts."""
    spec = json.loads(CONTRACT.read_text())
    spec["components"]["schemas"]["SimilarityParameters"].pop("required")
    responses = spec["paths"]["/v1/embeddings"]["post"]["responses"]
    for status, response in responses.items():
        if status != "200":
            response["content"]["application/json"]["schema"] = OPENAI_ERROR
    responses["400"] = {
        "description": "Malformed request (OpenAI's status)",
        "content": {"application/json": {"schema": OPENAI_ERROR}},
    }
    return spec


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def start_server(*args):
    """`quiver serve` on a free port; returns the process and its base URL."""
    server = subprocess.Popen(
        [BINARY, "serve", "--port", "0", "--max-client-batch-size", "64", *args],
        env=dict(os.environ, HF_HUB_OFFLINE="1"),
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in server.stderr:
        if "serving" in line:
            return server, line.rsplit(" on ", 1)[1].strip()
    raise RuntimeError("quiver serve exited before listening")


def run_schemathesis(base, routes):
    """Schemathesis with the hooks of tei_checks.py, against `routes` of the contract."""
    with tempfile.TemporaryDirectory() as scratch:
        contract = pathlib.Path(scratch) / "openapi.json"
        contract.write_text(json.dumps(quiver_contract()))
        paths = "|".join(path.lstrip("/") for path in routes)
        env = dict(os.environ, SCHEMATHESIS_HOOKS="tei_checks",
                   PYTHONPATH=str(pathlib.Path(__file__).parent))
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", str(contract),
             "--url", base,
             "--include-path-regex", f"^/({paths})$",
             "--checks", "all",
             # Replaced by tei_checks.quiver_accepts_valid_requests (see there why).
             "--exclude-checks", "positive_data_acceptance",
             "--max-examples", "60", "--seed", "20261205", "--workers", "1",
             "--suppress-health-check", "all"],
            env=env, cwd=scratch, capture_output=True, text=True, timeout=900,
        )
    return run.returncode, run.stdout + run.stderr


class TeiDropInTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server, cls.base = start_server("--model", str(MODEL),
                                            "--rerank-model", str(RERANKER))
        cls.sparse_server, cls.sparse_base = start_server("--model", str(SPLADE))

    @classmethod
    def tearDownClass(cls):
        for server in (cls.server, cls.sparse_server):
            server.terminate()
            server.wait(timeout=30)
            server.stderr.close()

    def post(self, route, body):
        return requests.post(self.base + route, json=body, timeout=60)

    def test_schemathesis_finds_no_breach_of_the_published_contract(self):
        for base, routes in ((self.base, SERVED), (self.sparse_base, SERVED_SPARSE)):
            code, report = run_schemathesis(base, routes)
            self.assertEqual(code, 0, report[-20000:])
            self.assertRegex(report, rf"Tested: {len(routes)}")

    def test_token_ids_embed_like_their_text(self):
        tokens = self.post("/tokenize", {"inputs": "where is the config parsed?"}).json()[0]
        ids = [token["id"] for token in tokens]
        by_text = self.post("/embed", {"inputs": "where is the config parsed?"}).json()[0]
        by_ids = self.post("/embed", {"inputs": ids}).json()[0]
        self.assertGreater(cosine(by_text, by_ids), 0.99999)
        both = self.post("/embed", {"inputs": ["where is the config parsed?", ids]}).json()
        self.assertGreater(cosine(both[0], both[1]), 0.99999)
        self.assertEqual(self.post("/decode", {"ids": ids}).json(), ["where is the config parsed?"])
        outside = self.post("/embed", {"inputs": [101, 999999, 102]})
        self.assertEqual(outside.status_code, 422)
        self.assertIn("999999", outside.json()["error"])

    def test_embed_all_gives_a_vector_per_token_whose_mean_is_the_embedding(self):
        text = "def add(a, b): return a + b"
        states = self.post("/embed_all", {"inputs": [text]}).json()
        tokens = self.post("/tokenize", {"inputs": text}).json()[0]
        self.assertEqual(len(states[0]), len(tokens))
        # all-MiniLM-L6-v2 pools by the mean of its token states, then normalises.
        mean = [sum(column) / len(states[0]) for column in zip(*states[0])]
        pooled = self.post("/embed", {"inputs": text}).json()[0]
        self.assertGreater(cosine(mean, pooled), 0.99999)

    def test_huggingface_hub_inference_client(self):
        from huggingface_hub import InferenceClient

        client = InferenceClient(model=self.base)
        vectors = client.feature_extraction(["def add(a, b): return a + b", "parse a file"])
        self.assertEqual(tuple(vectors.shape), (2, 384))
        expected = self.post("/embed", {"inputs": ["def add(a, b): return a + b"]}).json()[0]
        self.assertGreater(cosine(list(vectors[0]), expected), 0.99999)
        scores = client.sentence_similarity("add two numbers",
                                            other_sentences=["def add(a, b): return a + b",
                                                             "the weather is nice"])
        self.assertEqual(len(scores), 2)
        self.assertGreater(scores[0], scores[1])

    def test_langchain_endpoint_embeddings(self):
        from huggingface_hub import InferenceClient
        from langchain_huggingface import HuggingFaceEndpointEmbeddings

        # langchain-huggingface 1.x takes a hub repo id only; a self-hosted TEI is reached by
        # giving it an InferenceClient for the server's URL.
        embeddings = HuggingFaceEndpointEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2")
        embeddings.client = InferenceClient(model=self.base)
        documents = embeddings.embed_documents(["def add(a, b): return a + b", "parse a file"])
        query = embeddings.embed_query("add two numbers")
        self.assertEqual([len(d) for d in documents], [384, 384])
        self.assertGreater(cosine(query, documents[0]), cosine(query, documents[1]))


if __name__ == "__main__":
    unittest.main()
