"""`python -m rag.engine`: run the engine with settings from the environment."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from rag.engine.config import EngineSettings
from rag.engine.selfcheck import SelfCheckFailed
from rag.engine.server import serve_engine


def main() -> None:
    try:
        settings = EngineSettings()
    except ValidationError as exc:  # one line naming each bad variable, as `rag engine` says it
        names = ("_".join(map(str, e["loc"])) for e in exc.errors())
        problems = "; ".join(f"{n if n.isupper() else 'RAG_ENGINE_' + n.upper()}: {e['msg']}"
                             for n, e in zip(names, exc.errors(), strict=True))
        sys.stderr.write(f"error: invalid settings: {problems}\n")
        raise SystemExit(2) from None
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve_engine(settings)
    except SelfCheckFailed as exc:
        logging.getLogger("rag.engine").error("%s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
