"""The Chroma adapter: opens the collection (embedded or server), writes in safe batches, queries.

Chroma holds each chunk's vector and metadata; its text is in rag.index.texts (see there why).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

from rag.config import Settings
from rag.errors import EmbeddingModelMismatch, NotIndexed, StoreUnavailable
from rag.index.texts import TextStore

log = logging.getLogger(__name__)

# Collection metadata keys: the index remembers which model made its vectors.
META_MODEL = "embed_model"
META_DIM = "embed_dim"
# The chunk metadata Chroma holds: what a query filters on (records_of). The rest is kept with the text.
CHROMA_KEYS = ("source",)


@dataclass(frozen=True)
class Record:
    """One stored chunk: its text and metadata, apart from the vector."""

    id: str
    text: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    record: Record
    score: float  # cosine similarity, higher is closer


def chroma_client(settings: Settings) -> Any:
    """A Chroma client: a server when one is configured, else the embedded store under storage/."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    try:
        if settings.chroma_host:
            return chromadb.HttpClient(
                host=settings.chroma_host, port=settings.chroma_port, settings=chroma_settings
            )
        settings.chroma_path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_path), settings=chroma_settings)
    except Exception as exc:  # chromadb raises bare ValueError/ConnectionError for an unreachable server
        where = (
            f"the Chroma server at {settings.chroma_host}:{settings.chroma_port}"
            if settings.chroma_host
            else f"the store at {settings.chroma_path}"
        )
        raise StoreUnavailable(f"cannot open {where}: {exc}") from exc


REBUILD_HINT = "rag ingest DIR --rebuild"


def check_embedding_model(built: str | None, built_dim: int | None, model: str, dim: int | None = None) -> None:
    """The one rule for every index (Chroma's collection, the manifest): never mix two embedding models.

    `built` and `built_dim` are what the index records (None: nothing recorded yet, so no mismatch);
    `dim` is None when the configured model's dimension is not known, and then only names are compared.
    """
    if built is None:
        return
    if built != model or (dim is not None and built_dim not in (None, dim)):
        made = f" ({built_dim} dimensions)" if built_dim else ""
        configured = f" ({dim} dimensions)" if dim else ""
        raise EmbeddingModelMismatch(
            f"the index was built with embedding model '{built}'{made} but '{model}'{configured} is "
            f"configured; either set RAG_EMBED_MODEL={built}, or rebuild the index with: {REBUILD_HINT}"
        )


class ChromaStore:
    """The chunk collection and its texts. One instance per process; never shared across processes when embedded."""

    def __init__(self, client: Any, name: str, texts: TextStore) -> None:
        self._opened = client  # the client, or a Future of it (open(background=True))
        self.name = name
        self.texts = texts
        self._collection: Any = None

    @property
    def _client(self) -> Any:
        if isinstance(self._opened, Future):
            self._opened = self._opened.result()  # raises what opening raised (StoreUnavailable)
        return self._opened

    def settle(self) -> None:
        """Wait until a background open has finished, without raising what it raised: the caller leaves the
        store's lock next, and no other process may open the embedded store while this one still is."""
        if isinstance(self._opened, Future):
            wait([self._opened])

    @classmethod
    def open(cls, settings: Settings, *, background: bool = False) -> ChromaStore:
        """Open the store. `background` opens the embedded client on a thread of its own (the first open in a
        process costs ~0.15 s), so that `rag ingest` loads and embeds its first files meanwhile; its first use
        waits for it, and an error opening it is raised there. A Chroma server is always reached at once, so
        that an unreachable one is reported before any work."""
        try:
            texts = TextStore(settings.texts_path)  # first: an error here leaves no thread behind
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"cannot open the chunk texts at {settings.texts_path}: {exc}; if the file is damaged, rebuild "
                f"the index with: {REBUILD_HINT}"
            ) from exc
        if not background or settings.chroma_host:
            return cls(chroma_client(settings), settings.collection, texts)
        client: Future[Any] = Future()

        def opening() -> None:
            try:
                client.set_result(chroma_client(settings))
            except BaseException as exc:  # handed to whoever uses the store first
                client.set_exception(exc)

        threading.Thread(target=opening, name="chroma-open").start()
        return cls(client, settings.collection, texts)

    # -- collection lifecycle -------------------------------------------------------------------

    def exists(self) -> bool:
        return self._find() is not None

    def _find(self) -> Any:
        if self._collection is None:
            names = {getattr(c, "name", c) for c in self._client.list_collections()}
            if self.name in names:
                self._collection = self._client.get_collection(self.name, embedding_function=None)
        return self._collection

    @property
    def collection(self) -> Any:
        found = self._find()
        if found is None:
            raise NotIndexed("nothing is indexed yet; run: rag ingest DIR")
        return found

    def ensure(self, model: str, dim: int) -> None:
        """Create the collection for this embedding model, or check that it was built with it."""
        if self._find() is None:
            self._collection = self._client.create_collection(
                self.name,
                metadata={"hnsw:space": "cosine", META_MODEL: model, META_DIM: dim},
                embedding_function=None,
            )
            return
        self.check_model(model, dim)

    def indexed_model(self) -> tuple[str | None, int | None]:
        meta = self.collection.metadata or {}
        return meta.get(META_MODEL), meta.get(META_DIM)

    def check_model(self, model: str, dim: int | None = None) -> None:
        check_embedding_model(*self.indexed_model(), model, dim)

    def drop(self) -> None:
        if self._find() is not None:
            self._client.delete_collection(self.name)
        self._collection = None
        self.texts.clear()

    # -- writes -----------------------------------------------------------------------------------

    @property
    def max_batch(self) -> int:
        return int(self._client.get_max_batch_size())

    def _batches(self, n: int) -> Iterator[slice]:
        step = max(1, self.max_batch)
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def upsert(self, records: Sequence[Record], embeddings: Sequence[Sequence[float]]) -> None:
        """Texts first, then vectors: a chunk Chroma finds always has its text."""
        # Chroma keeps what a query filters on; the rest of the metadata goes with the text (rag.index.texts).
        self.texts.put((r.id, r.text, {k: v for k, v in r.metadata.items() if k not in CHROMA_KEYS}) for r in records)
        # Chroma rejects a write larger than get_max_batch_size() (about 5,461 on a default build).
        for part in self._batches(len(records)):
            batch = records[part]
            self.collection.upsert(
                ids=[r.id for r in batch],
                metadatas=[{k: r.metadata[k] for k in CHROMA_KEYS if k in r.metadata} or None for r in batch],
                embeddings=[list(e) for e in embeddings[part]],
            )

    def delete(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        if self.exists():
            for part in self._batches(len(ids)):
                self.collection.delete(ids=ids[part])
        self.texts.delete(ids)

    # -- reads ------------------------------------------------------------------------------------

    def count(self) -> int:
        found = self._find()
        return int(found.count()) if found is not None else 0

    def _get(self, ids: Sequence[str], include: list[str]) -> Iterator[dict[str, Any]]:
        """Chroma's `get` in batches it accepts; ids it does not hold are left out of the answer."""
        ids = list(ids)
        for part in self._batches(len(ids)):
            yield self.collection.get(ids=ids[part], include=include)

    def present(self, ids: Sequence[str]) -> set[str]:
        """Which of these chunk ids the store holds: a vector, or a text whose vector a kill cut off."""
        if not ids:
            return set()
        held = self.texts.present(ids)
        if self.exists():
            held |= {rid for got in self._get(ids, []) for rid in got["ids"]}
        return held

    def _records(self, ids: Sequence[str], metadatas: Sequence[Any]) -> list[Record]:
        """Records of these ids: Chroma's metadata with the text and the metadata kept beside it (the text from
        Chroma, and all the metadata there, for a chunk stored before texts moved out)."""
        entries = self.texts.entries(ids)
        if missing := [i for i in ids if i not in entries]:
            for got in self._get(missing, ["documents"]):
                entries.update((i, (d or "", {})) for i, d in zip(got["ids"], got["documents"], strict=True))
        records = []
        for i, meta in zip(ids, metadatas, strict=True):
            text, kept = entries.get(i, ("", {}))
            # What is kept with the text wins: Chroma merges an upsert's metadata into a chunk's old keys.
            records.append(Record(i, text, {**(meta or {}), **kept}))
        return records

    def records(self, ids: Sequence[str]) -> list[Record]:
        found: list[Record] = []
        for got in self._get(ids, ["metadatas"]):
            found += self._records(got["ids"], got["metadatas"])
        return found

    def get_with_embeddings(self, ids: Sequence[str]) -> tuple[list[Record], list[list[float]]]:
        records: list[Record] = []
        vectors: list[list[float]] = []
        for got in self._get(ids, ["metadatas", "embeddings"]):
            records += self._records(got["ids"], got["metadatas"])
            vectors += [[float(x) for x in e] for e in got["embeddings"]]
        return records, vectors

    def query(self, embedding: Sequence[float], k: int) -> list[Hit]:
        if self.count() == 0:
            return []
        res = self.collection.query(
            query_embeddings=[list(embedding)], n_results=k, include=["metadatas", "distances"]
        )
        records = self._records(res["ids"][0], res["metadatas"][0])
        return [Hit(r, 1.0 - float(dist)) for r, dist in zip(records, res["distances"][0], strict=True)]

    def records_of(self, source: str) -> list[Record]:
        """Every chunk stored for one source file (none when there is no collection)."""
        if not self.exists():
            return []
        got = self.collection.get(where={"source": source}, include=["metadatas"])
        return self._records(got["ids"], got["metadatas"])

    def all_records(self, step: int = 1000) -> Iterator[Record]:
        """Every stored chunk, a page at a time (NotIndexed when there is no collection)."""
        for offset in range(0, self.collection.count(), step):
            got = self.collection.get(include=["metadatas"], limit=step, offset=offset)
            yield from self._records(got["ids"], got["metadatas"])

    def sources(self) -> Counter[str]:
        """Chunk counts per source path, read from the stored metadata."""
        return Counter(self.source_of_ids().values())

    def source_of_ids(self) -> dict[str, str]:
        """Chunk id -> source path of everything in the collection (nothing when there is none)."""
        if not self.exists():
            return {}
        out: dict[str, str] = {}
        step = 5000  # below Chroma's max batch on every build
        for offset in range(0, self.count(), step):
            got = self.collection.get(include=["metadatas"], limit=step, offset=offset)
            for rid, meta in zip(got["ids"], got["metadatas"], strict=True):
                out[rid] = str((meta or {}).get("source", "?"))
        return out

    def heartbeat(self) -> None:
        try:
            self._client.heartbeat()
        except Exception as exc:  # the server went away; chromadb does not type this error
            raise StoreUnavailable(f"the Chroma store is not reachable: {exc}") from exc
