//! Message history and sequences behind one trait, with SQLite and PostgreSQL implementations.
