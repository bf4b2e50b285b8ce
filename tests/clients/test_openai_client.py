"""The official `openai` Python client against `quiver serve`'s /v1/embeddings.

Run by scripts/test with the client installed in .venv-clients; QUIVER_BIN names the binary
(default: target/debug/quiver, which `cargo test` builds) and QUIVER_TEST_MODELS the models folder.
"""

import math
import os
import pathlib
import subprocess
import unittest

import openai

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("QUIVER_BIN", str(ROOT / "target" / "debug" / "quiver"))
MODEL = pathlib.Path(os.environ.get("QUIVER_TEST_MODELS", ROOT / "models")) / "all-MiniLM-L6-v2"
API_KEY = "client-test-key"


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        env = dict(os.environ, HF_HUB_OFFLINE="1", QUIVER_API_KEY=API_KEY)
        cls.server = subprocess.Popen(
            [BINARY, "serve", "--model", str(MODEL), "--port", "0"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in cls.server.stderr:
            if "serving" in line:
                cls.base = line.rsplit(" on ", 1)[1].strip()
                break
        else:
            raise RuntimeError("quiver serve exited before listening")
        cls.client = openai.OpenAI(base_url=cls.base + "/v1", api_key=API_KEY, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=30)
        cls.server.stderr.close()

    def test_default_call_decodes_to_the_float_vectors(self):
        texts = ["def add(a, b): return a + b", "where is the config parsed?"]
        # The client asks for base64 by default and decodes it itself.
        default = self.client.embeddings.create(input=texts, model="all-MiniLM-L6-v2")
        floats = self.client.embeddings.create(
            input=texts, model="all-MiniLM-L6-v2", encoding_format="float"
        )
        self.assertEqual(len(default.data), 2)
        for a, b in zip(default.data, floats.data):
            self.assertEqual(a.index, b.index)
            self.assertEqual(len(a.embedding), 384)
            self.assertGreater(cosine(a.embedding, b.embedding), 0.999999)
        self.assertGreater(default.usage.prompt_tokens, 10)
        self.assertEqual(default.usage.prompt_tokens, default.usage.total_tokens)
        self.assertAlmostEqual(sum(x * x for x in floats.data[0].embedding), 1.0, places=4)

    def test_token_id_input_embeds_like_its_text(self):
        text = self.client.embeddings.create(input="hello world", model="m", encoding_format="float")
        # [CLS] hello world [SEP] in all-MiniLM-L6-v2's vocabulary.
        ids = self.client.embeddings.create(input=[[101, 7592, 2088, 102]], model="m",
                                            encoding_format="float")
        self.assertGreater(cosine(text.data[0].embedding, ids.data[0].embedding), 0.99999)
        self.assertEqual(ids.usage.prompt_tokens, 4)

    def test_dimensions_and_single_string(self):
        reply = self.client.embeddings.create(input="hello", model="m", dimensions=128)
        self.assertEqual(len(reply.data), 1)
        self.assertEqual(len(reply.data[0].embedding), 128)

    def test_errors_arrive_as_openai_exceptions(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.embeddings.create(input=["fine"], model="m", dimensions=9999)
        self.assertIn("9999", str(caught.exception))
        with self.assertRaises(openai.UnprocessableEntityError) as caught:
            self.client.embeddings.create(input=[[101, 999999, 102]], model="m")
        self.assertIn("999999", str(caught.exception))
        wrong = openai.OpenAI(base_url=self.base + "/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            wrong.embeddings.create(input="x", model="m")


if __name__ == "__main__":
    unittest.main()
