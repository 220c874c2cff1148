"""Print, as JSON, the SQL statements the real actor issues to apply one C2B confirmation.

Run in a subprocess whose ``FLEETPAY_*`` environment points at a bench database that holds
received inbox rows (``workers`` reads its settings at import). It applies the first row (warming
the per-process caches, as a long-running worker has them), then records every statement of the
second one through SQLAlchemy's cursor events, in the same transaction shape as
``workers.process_callback.process_callback``.

    python -m bench.trace_actor FIRST_ID SECOND_ID
"""

from __future__ import annotations

import json
import re
import sys


def main() -> None:
    from sqlalchemy import event

    from money.callbacks import apply_inbox_row
    from workers.runtime import sessions, settings

    first, second = int(sys.argv[1]), int(sys.argv[2])
    maker = sessions()
    with maker.begin() as session:
        apply_inbox_row(session, first, settings)

    statements: list[str] = []
    engine = maker.kw["bind"]

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(re.sub(r"\s+", " ", statement).strip())

    event.listen(engine, "before_cursor_execute", record)
    event.listen(engine, "commit", lambda conn: statements.append("COMMIT"))
    with maker.begin() as session:
        applied = apply_inbox_row(session, second, settings)
    event.remove(engine, "before_cursor_execute", record)
    json.dump({"applied": repr(applied), "statements": statements}, sys.stdout)


if __name__ == "__main__":
    main()
