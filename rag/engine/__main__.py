"""`python -m rag.engine`: run the engine with settings from the environment."""

from __future__ import annotations

import logging

from rag.engine.config import EngineSettings
from rag.engine.selfcheck import SelfCheckFailed
from rag.engine.server import serve_engine


def main() -> None:
    settings = EngineSettings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve_engine(settings)
    except SelfCheckFailed as exc:
        logging.getLogger("rag.engine").error("%s", exc)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
