"""`python -m rag` is the `rag` command."""

from rag.cli import main

if __name__ == "__main__":
    main(prog_name="rag")  # its help says `rag ...`, as the installed command's does
