"""Regenerate data/docs/en/operations-handbook.pdf, the multi-page sample PDF.

Run from anywhere:  python data/make_pdf.py
Needs fpdf2 (a dev dependency). The output is byte-for-byte reproducible for a given fpdf2
version: the creation date is fixed and nothing else varies between runs.

Each page covers one topic and states one distinctive fact (listed in data/FACTS.md), so a test
can check that a citation points at the right page. Core fonts only, so the text is plain ASCII.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

OUT = Path(__file__).resolve().parent / "docs" / "en" / "operations-handbook.pdf"
CREATED = datetime(2026, 11, 16, 9, 0, 0, tzinfo=UTC)
TITLE = "ollama-rag Operations Handbook"

# (heading, paragraphs); one entry per page, in page order.
PAGES: list[tuple[str, list[str]]] = [
    (
        "About this handbook",
        [
            "This handbook is for the people who keep an ollama-rag installation running: the "
            "question-answering service started with rag serve, the model server it talks to "
            "(Ollama or the bundled rag engine), and the vector store under storage/ or on a "
            "Chroma server. It assumes you already know how to ingest documents and ask questions; "
            "the user guide covers that.",
            "Every page covers one topic. Page 2 describes backups of storage/, page 3 how to "
            "upgrade models without losing answers, page 4 how to monitor the service through "
            "GET /health, page 5 how to plan disk and memory, and page 6 is the checklist to "
            "follow during an incident.",
            "The on-call alias for ollama-rag is rag-oncall.",
            "Questions about this handbook, corrections and new procedures go to that alias as "
            "well. When you change a procedure, change it here first and announce it afterwards, "
            "so that the handbook stays the single place where operational rules are written "
            "down.",
            "A note on wording: 'the service' means rag serve, 'the model server' means whatever "
            "answers at OLLAMA_HOST, and 'the store' means the Chroma collection together with "
            "the ingest manifest that describes it. The store and the manifest always belong "
            "together; never copy, restore or delete one without the other.",
        ],
    ),
    (
        "Backups of storage/",
        [
            "The directory named by RAG_STORAGE_DIR, storage/ by default, holds everything the "
            "index is made of: the embedded Chroma database and the ingest manifest. Losing it "
            "means re-embedding every document, which takes hours on a CPU-only host. Back it "
            "up.",
            "The nightly snapshot of storage/ runs at 02:30.",
            "That time is chosen so the snapshot never overlaps the working day, when people add "
            "documents. A snapshot must not be taken while rag ingest is writing. Because only one "
            "writer may hold the store at a time, the backup job should first check that no ingest "
            "is running, then copy the whole directory in one go. Copy storage/ as a unit: a "
            "Chroma database from one night and a manifest from another will disagree about which "
            "chunks exist.",
            "Restoring: stop rag serve, move the damaged storage/ aside, put the snapshot in its "
            "place, start rag serve again and compare the numbers that rag status reports with "
            "those of the snapshot. Then run rag ingest on the document folder. The manifest "
            "makes this cheap: only files changed since the snapshot are processed.",
            "If you use a Chroma server (RAG_CHROMA_HOST is set), the vectors live on that server "
            "and its data directory must be backed up there. The manifest still lives in the local "
            "storage/ directory, so both backups are needed and they must be taken at the same "
            "time.",
            "Test a restore at least once per quarter on a spare machine. A backup that has never "
            "been restored is only a hope.",
        ],
    ),
    (
        "Upgrading models",
        [
            "Two models are involved, and they are upgraded differently.",
            "The chat model (RAG_CHAT_MODEL) only writes answers. Changing it needs no rebuild: "
            "pull the new model on the model server, set the variable, restart rag serve and run "
            "rag eval to compare faithfulness with the previous model. If the numbers drop, set "
            "the old name back and restart; nothing else has changed.",
            "The embedding model (RAG_EMBED_MODEL) is different, because the whole index was built "
            "with it. Vectors from two embedding models cannot be compared, so the service "
            "answers HTTP 409 as soon as the configured model differs from the one recorded in "
            "the index. Plan the change as a rebuild:",
            "1. Pull the new embedding model on the model server.",
            "2. Build a second index next to the current one, for example with "
            "RAG_STORAGE_DIR=storage-next and the new RAG_EMBED_MODEL, using "
            "rag ingest DIR --rebuild.",
            "3. Run rag eval against the new index and compare retrieval quality with the old one.",
            "4. Switch the service over by pointing RAG_STORAGE_DIR and RAG_EMBED_MODEL at the new "
            "index, and restart rag serve.",
            "Keep the old embedding model installed for 14 days after an upgrade.",
            "During that period a rollback is only a configuration change: point both variables "
            "back at the old index and restart. After that period, remove the old model with "
            "ollama rm and delete the old index directory.",
            "Keep RAG_NUM_CTX unchanged during an upgrade. Changing it at the same time makes it "
            "impossible to tell which change caused a difference in the results.",
        ],
    ),
    (
        "Monitoring with /health",
        [
            "GET /health is the endpoint to watch. It answers quickly, does not run a model, and "
            "reports whether the service can reach the model server and the vector store. Point "
            "your monitoring system or your load balancer at it.",
            "Poll GET /health every 15 seconds.",
            "Raise an alert after three failed checks in a row, not after a single one: a model "
            "server that is loading a model on a busy CPU can be slow to answer for a moment.",
            "What the failures usually mean: if the model server is unreachable, the service "
            "answers questions with HTTP 503 and /health shows the model server as down, so check "
            "that Ollama or rag engine runs and that OLLAMA_HOST is right. If the store is down, "
            "check the disk under storage/ or the Chroma server named by RAG_CHROMA_HOST.",
            "/health does not tell you whether answers are good. For that, run rag eval on a "
            "schedule, for example once a week, and keep the results so you can see trends. A "
            "sudden drop in retrieval quality usually follows a change: new documents in a "
            "different format, new chunk settings, or a new model.",
            "Also keep an eye on answer latency at POST /ask. The first question after a restart "
            "is slow because the model must be loaded; RAG_REQUEST_TIMEOUT (300 seconds by "
            "default) allows for that. If every question is slow, the model server is probably "
            "reloading models, which happens when RAG_NUM_CTX changes between requests or when "
            "the server has too little memory to keep both models loaded.",
        ],
    ),
    (
        "Capacity planning",
        [
            "Disk. Every chunk stores a vector, its text and its metadata (source path, page and "
            "chunk ID). With all-minilm each vector has 384 dimensions, about 1.5 kilobytes as "
            "32-bit floats; the text of a 200-token chunk adds roughly one more kilobyte, and the "
            "search index adds overhead on top.",
            "Budget 6 KB of disk per chunk.",
            "To estimate the number of chunks, divide the token count of your documents by the "
            "chunk size minus the overlap. With the defaults (RAG_CHUNK_SIZE 200, "
            "RAG_CHUNK_OVERLAP 30) every chunk adds about 170 new tokens, so a manual of one "
            "hundred pages usually yields a few hundred chunks. Leave room for two copies of the "
            "index during an embedding model upgrade (see page 3) and for the snapshots (see "
            "page 2).",
            "Memory. The model server needs enough memory to keep the chat model and the "
            "embedding model loaded at the same time; otherwise it swaps them for every question. "
            "The defaults, smollm2:135m and all-minilm, are small and fit comfortably on any "
            "server. A larger chat model needs memory for its weights plus its context window, "
            "which grows with RAG_NUM_CTX.",
            "CPU. Ingesting is dominated by embedding. Embeddings are requested in batches, so a "
            "large first ingest keeps all cores busy; schedule it outside working hours. Later "
            "ingests only process changed files and are usually quick.",
            "Concurrency. Each question occupies the chat model for the length of its answer. If "
            "many people ask at once, answers queue on the model server; measure before buying "
            "hardware.",
        ],
    ),
    (
        "Incident checklist",
        [
            "Follow these steps in order when users report that ollama-rag gives no answers, "
            "errors or clearly wrong answers.",
            "Incident tickets use the prefix INC-RAG.",
            "1. Open a ticket and note the time the problem started and who reported it.",
            "2. Call GET /health and run rag status. Paste both outputs into the ticket before "
            "changing anything.",
            "3. Read the HTTP status of a failing request. A 503 means the model server cannot be "
            "reached, or a model is missing; the message then names the ollama pull command to "
            "run. A 409 means the embedding model differs from the one that built the index: set "
            "RAG_EMBED_MODEL back or rebuild.",
            "4. If an ingest fails at once because another writer holds the store, find that "
            "other process before doing anything else. Never delete lock files while an ingest "
            "may still be running.",
            "5. If the store is damaged, restore the latest snapshot as described on page 2, then "
            "run rag ingest to catch up.",
            "6. If answers are wrong but no errors appear, call POST /retrieve with the same "
            "question. Wrong chunks point at retrieval (chunking, embedding model, top_k); right "
            "chunks with a wrong answer point at the chat model.",
            "Afterwards: write down the cause and the fix in the ticket, add the failing question "
            "to the evaluation set so rag eval catches it next time, and update this handbook if "
            "a step was missing or wrong.",
        ],
    ),
]


class Handbook(FPDF):
    def header(self) -> None:
        self.set_font("Helvetica", "I", 9)
        self.set_text_color(110)
        self.cell(0, 8, TITLE, align="R")
        self.ln(12)
        self.set_text_color(0)

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", "I", 9)
        self.set_text_color(110)
        self.cell(0, 10, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(0)


def build() -> bytes:
    pdf = Handbook(format="A4")
    pdf.set_creation_date(CREATED)
    pdf.set_title(TITLE)
    pdf.set_author("ollama-rag maintainers")
    pdf.set_subject("Operations: backups, upgrades, monitoring, capacity, incidents")
    pdf.set_creator("data/make_pdf.py")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.set_margins(20, 15, 20)
    for heading, paragraphs in PAGES:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 16)
        pdf.multi_cell(0, 9, heading)
        pdf.ln(3)
        pdf.set_font("Helvetica", "", 11)
        for para in paragraphs:
            pdf.multi_cell(0, 5.6, para)
            pdf.ln(2.5)
    if pdf.page_no() != len(PAGES):
        raise SystemExit(f"a topic overflowed its page: {pdf.page_no()} pages for {len(PAGES)} topics")
    return bytes(pdf.output())


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(build())
    print(f"wrote {OUT} ({len(PAGES)} pages)")  # noqa: T201 - a script's report


if __name__ == "__main__":
    main()
