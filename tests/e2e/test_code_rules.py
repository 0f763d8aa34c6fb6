"""Rules of the code that a review would otherwise have to keep by hand (no service
involved): PostgreSQL is one boundary, libpq is used only by the src/db* files (issue 13:
every connection made by one function, every wait on PostgreSQL bounded there)."""

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
LIBPQ = re.compile(r"#include\s*<libpq-fe\.h>|\bPQ[a-z][A-Za-z]*\s*\(|\bPG(?:conn|result)\b"
                   r"|\bExecStatusType\b|\bCONNECTION_OK\b|\bPG_DIAG_")


def test_libpq_is_used_only_by_the_db_files():
    offenders = []
    for f in sorted(SRC.glob("*.[ch]")):
        if f.name.startswith("db"):
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if LIBPQ.search(line):
                offenders.append(f"{f.name}:{n}: {line.strip()}")
    assert not offenders, "libpq outside src/db*:\n" + "\n".join(offenders)
    # and the db files do use it: the rule is not vacuous
    assert any(LIBPQ.search(f.read_text()) for f in SRC.glob("db*.c"))
