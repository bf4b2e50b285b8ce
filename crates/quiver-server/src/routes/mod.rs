//! One file per API the server speaks.

pub mod info;
pub mod openai;
pub mod search;
pub mod tei;
