"""The official MCP Python SDK (`mcp` on PyPI) against `quiver mcp`, over stdio and HTTP.

Run by scripts/test with the SDK installed in .venv-clients; QUIVER_BIN names the binary
(default: target/debug/quiver) and QUIVER_TEST_MODELS the models folder.
"""

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("QUIVER_BIN", str(ROOT / "target" / "debug" / "quiver"))
MODEL = pathlib.Path(os.environ.get("QUIVER_TEST_MODELS", ROOT / "models")) / "all-MiniLM-L6-v2"
TOOLS = {"search", "read_definition", "find_symbol", "index_status", "reindex"}

SHAPES = '''import math


class Shape:
    """A plane figure."""

    def area(self):
        raise NotImplementedError


class Circle(Shape):
    def __init__(self, radius):
        self.radius = radius

    def area(self):
        return math.pi * self.radius ** 2


def parse_config(path):
    """Read a TOML configuration file."""
    with open(path) as handle:
        return handle.read()
'''

ROTATE = '''

def rotate_polygon_vertices(vertices, degrees):
    """Turn every vertex of a polygon about the origin."""
    turn = math.radians(degrees)
    return [(x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn))
            for x, y in vertices]
'''


def make_tree():
    tree = pathlib.Path(tempfile.mkdtemp(prefix="quiver-mcp-"))
    (tree / "src").mkdir()
    (tree / "src" / "shapes.py").write_text(SHAPES)
    (tree / "README.md").write_text("# Install\n\nRun `pip install .` in this folder.\n")
    return tree


def env():
    return dict(os.environ, HF_HUB_OFFLINE="1")


async def wait_for(condition, seconds, what):
    """Polls the async `condition` until it gives something truthy; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.05)


class Session:
    """What both transports are tested for, on a connected client."""

    def __init__(self, test, client, tree):
        self.test = test
        self.client = client
        self.tree = tree

    async def indexed(self):
        status = await self.client.call_tool("index_status", {})
        self.test.assertFalse(status.is_error, status.content)
        index = status.structured_content["index"]
        return index is not None and index["stats"]["chunks"] > 0

    async def search(self, arguments):
        result = await self.client.call_tool("search", arguments)
        self.test.assertFalse(result.is_error, result.content)
        return result.structured_content

    async def run(self):
        t = self.test
        listed = await self.client.list_tools()
        t.assertEqual({tool.name for tool in listed.tools}, TOOLS)
        for tool in listed.tools:
            t.assertEqual(tool.input_schema["type"], "object")
            t.assertGreater(len(tool.description), 40, tool.name)
        await wait_for(self.indexed, 60, "the first index run")

        hits = (await self.search({"query": "area of a circle", "k": 3}))["hits"]
        t.assertEqual(hits[0]["path"], "src/shapes.py")
        t.assertEqual(hits[0]["symbol"], "area")
        t.assertLessEqual(len(hits), 3)

        # An edit is found within 3 s of the write, with no reindex call.
        with open(self.tree / "src" / "shapes.py", "a") as source:
            source.write(ROTATE)
        written = time.monotonic()

        async def found():
            hits = (await self.search({"query": "rotate_polygon_vertices", "mode": "keyword"}))["hits"]
            return [h for h in hits if h["symbol"] == "rotate_polygon_vertices"]

        hit = (await wait_for(found, 3.0, "the edited function found by search"))[0]
        t.assertLess(time.monotonic() - written, 3.0)

        definition = await self.client.call_tool("read_definition", {"chunk_id": hit["chunk_id"]})
        t.assertFalse(definition.is_error, definition.content)
        whole = definition.structured_content["definition"]
        t.assertIn("def rotate_polygon_vertices", whole["text"])
        t.assertIn("for x, y in vertices", whole["text"])
        by_line = await self.client.call_tool(
            "read_definition", {"location": f"src/shapes.py:{hits[0]['start_line']}"}
        )
        t.assertEqual(by_line.structured_content["enclosing"], hits[0]["parent"])

        symbols = await self.client.call_tool("find_symbol", {"name": "Circle.area"})
        (area,) = symbols.structured_content["symbols"]
        t.assertEqual((area["kind"], area["parent"], area["path"]), ("method", "Circle", "src/shapes.py"))
        t.assertEqual(SHAPES.splitlines()[area["start_line"] - 1].strip(), "def area(self):")
        classes = await self.client.call_tool("find_symbol", {"name": "Circle"})
        (circle,) = classes.structured_content["symbols"]
        t.assertEqual(SHAPES.splitlines()[circle["start_line"] - 1], "class Circle(Shape):")
        t.assertEqual(SHAPES.splitlines()[circle["end_line"] - 1].strip(), "return math.pi * self.radius ** 2")
        prefixed = await self.client.call_tool("find_symbol", {"name": "rotate_", "match": "prefix"})
        t.assertEqual(
            [s["symbol"] for s in prefixed.structured_content["symbols"]], ["rotate_polygon_vertices"]
        )

        packed = await self.search({"query": "circle area and polygons", "max_tokens": 120})
        t.assertLessEqual(packed["tokens"], 120)
        t.assertGreater(len(packed["definitions"]), 0)
        spans = [(d["path"], d["start_line"], d["end_line"]) for d in packed["definitions"]]
        for i, (path, start, end) in enumerate(spans):
            for other_path, other_start, other_end in spans[i + 1:]:
                overlap = path == other_path and start <= other_end and other_start <= end
                t.assertFalse(overlap, f"packed definitions overlap: {spans}")

        # Wrong argument types: a tool error that names the field; the server lives on.
        wrong = await self.client.call_tool("search", {"query": "x", "k": "ten"})
        t.assertTrue(wrong.is_error)
        t.assertIn("`k`", wrong.content[0].text)
        unknown_field = await self.client.call_tool("find_symbol", {"nme": "area"})
        t.assertTrue(unknown_field.is_error)
        with t.assertRaises(MCPError) as raised:
            await self.client.call_tool("no_such_tool", {})
        t.assertIn("no_such_tool", str(raised.exception))

        # reindex reports what changed, with progress notifications on the way.
        (self.tree / "src" / "extra.py").write_text("def extra_helper():\n    return 42\n")
        progress = []

        async def on_progress(done, total, message):
            progress.append((done, total, message))

        report = await self.client.call_tool("reindex", {}, progress_callback=on_progress)
        t.assertFalse(report.is_error, report.content)
        changed = report.structured_content["changed_files"]
        # The watcher may have taken the new file first; then nothing is left to change.
        t.assertIn(changed, (["src/extra.py"], []))
        t.assertGreater(len(progress), 0)
        t.assertEqual(progress[-1][0], progress[-1][1])


class McpStdioTest(unittest.TestCase):
    def test_the_sdk_over_stdio_searches_follows_an_edit_and_survives_bad_calls(self):
        tree = make_tree()
        self.addCleanup(shutil.rmtree, tree, True)
        params = StdioServerParameters(
            command=BINARY, args=["mcp", str(tree), "--model", str(MODEL)], env=env()
        )

        async def main():
            async with Client(params) as client:
                await Session(self, client, tree).run()

        asyncio.run(main())

    def test_malformed_json_rpc_gets_errors_and_the_server_lives_on(self):
        tree = make_tree()
        self.addCleanup(shutil.rmtree, tree, True)
        messages = [
            "{not json",
            json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
            json.dumps({"jsonrpc": "2.0", "id": 2, "method": "no/such/method"}),
            json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {}}),
            json.dumps({"jsonrpc": "2.0", "id": 4, "method": "ping"}),
        ]
        done = subprocess.run(
            [BINARY, "mcp", str(tree), "--model", str(MODEL), "--watch", "false"],
            input="\n".join(messages) + "\n",
            capture_output=True,
            text=True,
            env=env(),
            timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        replies = [json.loads(line) for line in done.stdout.splitlines()]
        codes = {r.get("id"): r.get("error", {}).get("code") for r in replies if r.get("id")}
        self.assertEqual(codes[2], -32601)
        self.assertEqual(codes[3], -32602)
        self.assertEqual([r["result"] for r in replies if r.get("id") == 4], [{}])
        # Bad JSON and a batch (not part of MCP) get errors without an id, not silence.
        unnamed = sorted(r["error"]["code"] for r in replies if r.get("id") is None)
        self.assertEqual(unnamed, [-32700, -32600])


class McpHttpTest(unittest.TestCase):
    def start(self, tree, *extra):
        server = subprocess.Popen(
            [BINARY, "mcp", str(tree), "--model", str(MODEL), "--http", "0", *extra],
            env=env(),
            stderr=subprocess.PIPE,
            text=True,
        )

        def stop():
            server.terminate()
            server.wait(timeout=30)
            server.stderr.close()

        self.addCleanup(stop)
        for line in server.stderr:
            if "serving http://" in line:
                return line.split("serving ", 1)[1].strip()
        raise RuntimeError("quiver mcp exited before listening")

    def test_the_sdk_over_streamable_http(self):
        tree = make_tree()
        self.addCleanup(shutil.rmtree, tree, True)
        url = self.start(tree)

        async def main():
            async with Client(url) as client:
                await Session(self, client, tree).run()

        asyncio.run(main())
        # Malformed JSON: 400 with the JSON-RPC parse error; then the server still answers.
        request = urllib.request.Request(url, data=b"{oops", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=30)
        self.assertEqual(raised.exception.code, 400)
        self.assertEqual(json.load(raised.exception)["error"]["code"], -32700)
        ping = urllib.request.Request(
            url,
            data=json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(ping, timeout=30) as response:
            self.assertEqual(json.load(response)["result"], {})

    def test_an_api_key_is_required_when_given(self):
        tree = make_tree()
        self.addCleanup(shutil.rmtree, tree, True)
        url = self.start(tree, "--api-key", "mcp-test-key", "--watch", "false")
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        with self.assertRaises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30)
        self.assertEqual(raised.exception.code, 401)
        keyed = dict(headers, Authorization="Bearer mcp-test-key")
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=keyed), timeout=30) as r:
            self.assertEqual(json.load(r)["result"], {})


if __name__ == "__main__":
    unittest.main()
