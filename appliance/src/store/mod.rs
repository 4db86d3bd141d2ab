//! The one store: SQLite (WAL, synchronous=FULL), versioned schema, group-commit writer.
