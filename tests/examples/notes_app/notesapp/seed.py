"""Seed: `python -m notesapp.seed [--authors N] [--notes N]` into DATABASE_URL (after
`alembic upgrade head`). Author i's token is `token-<i>`."""

from __future__ import annotations

import argparse
import os
import random
from datetime import datetime, timedelta

from sqlalchemy import create_engine, insert

from notesapp.models import authors, note_tags, notes, tags, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--authors", type=int, default=8)
    parser.add_argument("--notes", type=int, default=60)
    args = parser.parse_args()
    rng, start = random.Random(7), datetime(2024, 1, 1)
    labels = ["work", "home", "idea", "todo", "read", "later"]
    engine = create_engine(os.environ["DATABASE_URL"])
    with engine.begin() as conn:
        for i in range(1, args.authors + 1):
            conn.execute(insert(authors).values(id=i, name=f"author {i}"))
            conn.execute(insert(tokens).values(token=f"token-{i}", author_id=i))
        for i, label in enumerate(labels, 1):
            conn.execute(insert(tags).values(id=i, label=label))
        for i in range(1, args.notes + 1):
            conn.execute(
                insert(notes).values(
                    id=i,
                    author_id=rng.randint(1, args.authors),
                    title=f"note {i}",
                    body=f"body of note {i}",
                    created_at=start + timedelta(hours=i),
                )
            )
            for tag_id in rng.sample(range(1, len(labels) + 1), rng.randint(0, 3)):
                conn.execute(insert(note_tags).values(note_id=i, tag_id=tag_id))
    engine.dispose()
    print(f"seeded {args.authors} authors, {args.notes} notes")


if __name__ == "__main__":
    main()
