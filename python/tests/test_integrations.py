"""The integrations against the real packages: LangChain, Chroma, FAISS (the docs' example)."""

import pathlib
import re

import numpy as np
import pytest

import quiver

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = [
    "Retry a failed network call, waiting twice as long after each failure.",
    "Read the settings file and return its fields as a dictionary.",
    "The area of a circle is pi times the radius squared.",
    "Sort the records by date, newest first.",
]


def test_langchain_embeddings(model):
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import InMemoryVectorStore

    from quiver.integrations.langchain import QuiverEmbeddings

    embeddings = QuiverEmbeddings(model)
    assert isinstance(embeddings, Embeddings)
    vectors = embeddings.embed_documents(DOCS)
    assert len(vectors) == len(DOCS) and len(vectors[0]) == 384
    assert isinstance(vectors[0][0], float)
    np.testing.assert_allclose(vectors, model.encode(DOCS), atol=1e-6)
    store = InMemoryVectorStore.from_texts(DOCS, embedding=embeddings)
    found = store.similarity_search("how big is a circle", k=1)
    assert found[0].page_content == DOCS[2]


def test_chroma_persistent_client(tmp_path, model):
    import chromadb

    from quiver.integrations.chroma import QuiverEmbeddingFunction

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    function = QuiverEmbeddingFunction(model=model)
    collection = client.create_collection(
        "docs", embedding_function=function, configuration={"hnsw": {"space": "cosine"}}
    )
    collection.add(ids=[str(i) for i in range(len(DOCS))], documents=DOCS)
    stored = collection.get(ids=["0"], include=["embeddings"])["embeddings"][0]
    np.testing.assert_allclose(stored, model.encode(DOCS[0]), atol=1e-6)
    found = collection.query(query_texts=["waiting before trying again"], n_results=1)
    assert found["ids"][0] == ["0"]


def test_chroma_ranks_an_index_as_vector_search_does(tmp_path, model):
    """The index's stored vectors in Chroma, queried through the embedding function, rank as
    `Index.search(mode="vector")` does (Markdown chunks have no signature vectors, so a chunk's
    score is its one cosine)."""
    import chromadb

    from quiver.integrations.chroma import QuiverEmbeddingFunction

    tree = tmp_path / "docs"
    tree.mkdir()
    for i, text in enumerate(DOCS):
        (tree / f"note{i}.md").write_text(f"# Note {i}\n\n{text}\n")
    index = quiver.Index(tmp_path / "index", model=model)
    index.update(tree)
    uids, matrix = index.vectors()
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    collection = client.create_collection(
        "chunks",
        embedding_function=QuiverEmbeddingFunction(model=model),
        configuration={"hnsw": {"space": "cosine"}},
    )
    collection.add(ids=[str(u) for u in uids], embeddings=matrix)
    for query in ["sorting by date", "configuration fields", "circle area", "retrying"]:
        hits = index.search(query, k=3, mode="vector")
        found = collection.query(query_texts=[query], n_results=3)
        assert found["ids"][0] == [str(h.uid) for h in hits], query


def test_faiss_example_in_the_docs(tmp_path, model, tree, monkeypatch):
    pytest.importorskip("faiss")
    text = (REPO / "docs" / "python.md").read_text()
    match = re.search(r"<!-- faiss-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/python.md has no FAISS example"
    monkeypatch.chdir(tmp_path)
    quiver.Index(tree / ".quiver", model=model).update(tree)
    namespace = {"ROOT": str(tree), "MODEL": model.model_id}
    exec(compile(match.group(1), "docs/python.md", "exec"), namespace)
    assert namespace["best"].path == "pkg/retry.py"
