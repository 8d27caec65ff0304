//! chinwag: a self-hosted real-time chat server that speaks Socket.IO.
//!
//! # Layout
//! - `store`: message history behind the `HistoryStore` trait (SQLite, PostgreSQL).

pub mod store;
