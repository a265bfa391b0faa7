//! The embedded default source: SQLite files through rusqlite (bundled).
